"""The filter stage (`codemill filter`, `python -m codemill.filter`): the crawl's `files/` through
the file rules and language identification of SPEC §1 (`codemill.filter.rules`), then PEP 8 formatting
of the kept Python files (`codemill.filter.pep8`), on Ray Data.

Writes under `--out`:
- `kept/`: Parquet (zstd), KEPT_SCHEMA: every files/ column plus `language`;
- `rejected/`: Parquet (zstd), REJECTED_SCHEMA: doc_id, repo, path, ext, language, the first failed rule
  as `reason`, and the measured values;
- `stats.json` (see `codemill.filter.stats`) and `language_mix.png`.
Every input file is in exactly one of kept/ and rejected/. kept/ and rejected/ are emptied first, so a
rerun never leaves parts of an earlier run behind.

The logic lives in Ray-free modules; this one only wires it: read_parquet -> map_batches(decide, then
write that batch's kept and rejected parts) -> per-batch statistics, summed on the driver. One streaming
pass: nothing is held in the object store, so memory stays flat however large the corpus.
"""

from __future__ import annotations

import hashlib
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from codemill import storage
from codemill.crawl.outputs import complete_file_parts
from codemill.filter import pep8, rules
from codemill.filter import stats as filter_stats
from codemill.filter.config import FilterConfig
from codemill.filter.schema import KEPT_SCHEMA, REJECTED_SCHEMA
from codemill.plots import language_mix_png
from codemill.runner import StageRun
from codemill.stages import CRAWL_FILES, FILTER_FIGURE, FILTER_KEPT, FILTER_REJECTED

log = logging.getLogger("codemill.filter")

EMPTY_PART = "part-empty.parquet"


def decide_batch(batch: pa.Table, config: FilterConfig) -> pa.Table:
    """Measure and decide every file of a batch and format the kept Python files."""
    decided = rules.decide(batch, config)
    if config.format_python:
        decided = pep8.format_python(decided, config.pep8_line_length)
    return decided


def part_name(batch: pa.Table) -> str:
    """Named by the batch's documents, so a retried task overwrites its own parts instead of adding more."""
    ids = batch.column("doc_id")
    key = f"{ids[0].as_py()}:{ids[len(ids) - 1].as_py()}:{len(ids)}" if len(ids) else "empty"
    return f"part-{hashlib.sha1(key.encode()).hexdigest()[:20]}.parquet"


def filter_and_write(batch: pa.Table, config: FilterConfig, kept_uri: str, rejected_uri: str) -> pa.Table:
    """One Ray Data task: decide a batch, write its kept and rejected parts, return its statistics."""
    decided = decide_batch(batch, config)
    name = part_name(batch)
    for rows, uri in ((kept_rows(decided), kept_uri), (rejected_rows(decided), rejected_uri)):
        if rows.num_rows:
            storage.write_table(rows, storage.join(uri, name))
    return stats_rows(decided, config)


def kept_rows(decided: pa.Table) -> pa.Table:
    return decided.filter(rules.is_kept(decided)).select(KEPT_SCHEMA.names).cast(KEPT_SCHEMA)


def rejected_rows(decided: pa.Table) -> pa.Table:
    return decided.filter(pc.invert(rules.is_kept(decided))).select(REJECTED_SCHEMA.names).cast(REJECTED_SCHEMA)


def stats_rows(decided: pa.Table, config: FilterConfig) -> pa.Table:
    return filter_stats.batch_stats(decided, config)


def body(run: StageRun) -> dict:
    from codemill.raysupport import data_context, ensure_ray

    config: FilterConfig = run.config
    ensure_ray()
    import ray.data

    started = time.time()
    # Which formatter wrote the kept Python files (checked first: a missing ruff fails before any work).
    formatter = f"ruff {pep8.ruff_version()}" if config.format_python else None
    files_uri = run.input_path("input", CRAWL_FILES)
    kept_uri, rejected_uri = run.path(FILTER_KEPT), run.path(FILTER_REJECTED)
    run.clear(FILTER_KEPT, FILTER_REJECTED)

    parts = complete_file_parts(run.inputs["input"])  # only repositories the crawl completed under its config
    if parts:
        fs, _ = storage.filesystem(files_uri)
        with data_context():
            per_batch = (ray.data.read_parquet([storage.filesystem(p)[1] for p in parts], filesystem=fs)
                         .map_batches(filter_and_write, batch_format="pyarrow", batch_size=config.batch_rows,
                                      fn_kwargs={"config": config, "kept_uri": kept_uri, "rejected_uri": rejected_uri}))
            stats = filter_stats.summarize(per_batch.iter_batches(batch_format="pyarrow", batch_size=None))
        for uri, schema in ((kept_uri, KEPT_SCHEMA), (rejected_uri, REJECTED_SCHEMA)):
            if not storage.list_files(uri, ".parquet"):  # readers of an empty result still find its columns
                storage.write_table(schema.empty_table(), storage.join(uri, EMPTY_PART))
    else:
        log.warning("filter: %s holds no Parquet files; writing empty outputs", files_uri)
        storage.write_table(KEPT_SCHEMA.empty_table(), storage.join(kept_uri, EMPTY_PART))
        storage.write_table(REJECTED_SCHEMA.empty_table(), storage.join(rejected_uri, EMPTY_PART))
        stats = filter_stats.summarize([])

    stats["pep8_formatter"] = formatter
    run.write_stats(stats)
    storage.write_bytes(run.path(FILTER_FIGURE), language_mix_png(filter_stats.kept_bytes_by_language(stats)))
    seconds = max(time.time() - started, 1e-9)
    log.info("filter: %.1f MB in %.1f s, %.2f MB/s", stats["bytes"]["input"] / 1e6, seconds,
             stats["bytes"]["input"] / 1e6 / seconds)
    return {
        "input_files": stats["files"]["input"], "kept_files": stats["files"]["kept"],
        "rejected_files": stats["files"]["rejected"], "input_bytes": stats["bytes"]["input"],
        "kept_bytes": stats["bytes"]["kept_output"],
        "rejected_by_reason": {r: v["files"] for r, v in stats["by_reason"].items()},
        "pep8": {s: v["files"] for s, v in stats["pep8"].items()},
        "pep8_formatter": formatter,
    }
