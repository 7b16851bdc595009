"""Thin helpers every stage's Ray wiring uses. Only stage modules import this (logic never imports Ray)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

log = logging.getLogger("codemill")

# Ray Data warns about its own deprecated settings whenever a context is copied, though codemill sets none
# of them: the warnings say nothing to a user watching a stage.
for _setting in ("use_push_based_shuffle", "use_polars", "use_arrow_tensor_v2"):
    warnings.filterwarnings("ignore", message=f".*`{_setting}` is deprecated", category=DeprecationWarning)


def ensure_ray(**kwargs):
    """Connect to the cluster this process belongs to (RAY_ADDRESS, set by `ray job submit`), or start a
    local one when run by hand; returns the `ray` module."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True, **kwargs)
        log.info("ray: connected, resources %s", ray.cluster_resources())
    return ray


def run_data_stage(run, work, **settings: Any) -> dict:
    """A Ray Data stage body: connect, then `work(run)` with these Ray Data settings, restored afterwards."""
    ensure_ray()
    with data_context(**settings):
        return work(run)


@contextlib.contextmanager
def data_context(**settings: Any) -> Iterator[Any]:
    """Ray Data's context with these settings (and progress bars on) for the datasets made and run inside
    the block; the process's context is restored after it, so a stage never changes it for the next."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    settings = {"enable_progress_bars": True, **settings}
    saved = {name: getattr(ctx, name) for name in settings}
    for name, value in settings.items():
        setattr(ctx, name, value)
    try:
        yield ctx
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


def collect_table(ds, schema: pa.Schema | None = None) -> pa.Table:
    """A small dataset's rows on the driver as one table (empty, of `schema` when given, if it has none)."""
    tables = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
              for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table() if schema is not None else pa.table({})
    return pa.concat_tables(tables, promote_options="default")
