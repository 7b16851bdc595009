"""Executions on Ray: items in small batches as Ray tasks over the cluster's CPUs, the slowest first, a bounded
number in flight. Rows come back as batches finish and go to `on_rows` at once (codemill.eval.partial writes
them), with progress in the log. A batch whose task is lost twice (Ray retries a lost worker once) or that
outlives its time bound gives `infrastructure_error` rows for its items instead of failing the stage. A
batch that finds its node's toolchains unlike the driver's stops the run (ToolchainMismatch): its results
would not be comparable.

The work itself is a Ray-free function named "module:function", `(items, context) -> rows`, each row
carrying its item's `key`.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable

from codemill.eval.benchmark_check import ToolchainMismatch
from codemill.eval.languages import INFRASTRUCTURE_ERROR
from codemill.eval.progress import Progress

log = logging.getLogger("codemill.eval")

WAIT_S = 30.0             # how long one wait for a finished batch lasts before the log says what is pending
BATCH_SLACK_S = 120.0     # beyond a batch's own time bound: scheduling, a worker start, a retry's start


def _run_batch(worker: str, items: list[dict], context: dict) -> list[dict]:
    module, name = worker.split(":")
    return getattr(importlib.import_module(module), name)(items, context)


def infrastructure_rows(items: list[dict], why: str) -> list[dict]:
    return [{"key": it["key"], "outcome": INFRASTRUCTURE_ERROR, "passed": False, "seconds": 0.0,
             "stderr": why[-1000:]} for it in items]


def execute_on_ray(items: list[dict], worker: str, context: dict, *, batch_size: int, cpus_per_task: float,
                   batch_bound_s: Callable[[list[dict]], float], what: str,
                   on_rows: Callable[[list[dict]], None], node_labels: dict[str, str] | None = None
                   ) -> dict[str, dict]:
    """Every item through `worker` on Ray; rows by key. `batch_bound_s(batch)`: the longest one attempt of a
    batch may take (its items' compile and run limits); `node_labels`: only nodes with these Ray labels."""
    from codemill.raysupport import ensure_ray

    ray = ensure_ray()
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    if not batches:
        return {}
    slots = max(2, int(2 * float(ray.cluster_resources().get("CPU", 1)) / cpus_per_task))
    remote = ray.remote(_run_batch).options(num_cpus=cpus_per_task, max_retries=1,
                                            **({"label_selector": dict(node_labels)} if node_labels else {}))
    context_ref = ray.put(context)
    progress = Progress(what, len(items))
    by_key: dict[str, dict] = {}
    pending: dict = {}  # ref -> (batch, deadline)
    queue = list(reversed(batches))

    def submit() -> None:
        while queue and len(pending) < slots:
            batch = queue.pop()
            ref = remote.remote(worker, batch, context_ref)
            pending[ref] = (batch, time.monotonic() + 2 * batch_bound_s(batch) + BATCH_SLACK_S)

    submit()
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
        now = time.monotonic()
        for ref in done:
            batch, _ = pending.pop(ref)
            rows = _rows_of(ray, ref, batch)
            for row in rows:
                by_key[row["key"]] = row
            on_rows(rows)
            progress.advance(len(rows))
        for ref, (batch, deadline) in list(pending.items()):
            if now > deadline:
                ray.cancel(ref, force=True)
                pending.pop(ref)
                rows = infrastructure_rows(batch, f"the batch did not finish within its bound of "
                                                  f"{2 * batch_bound_s(batch) + BATCH_SLACK_S:.0f} s (cancelled)")
                by_key.update((r["key"], r) for r in rows)
                on_rows(rows)
                progress.advance(len(rows))
        if not done:
            log.info("eval: waiting for %d batch(es) of %s to finish (%d queued)", len(pending), what, len(queue))
        submit()
    return by_key


def _rows_of(ray, ref, batch: list[dict]) -> list[dict]:
    """The batch's rows; infrastructure_error rows when its task failed (a lost worker, twice; an error of the
    executor itself); ToolchainMismatch propagates."""
    try:
        return ray.get(ref)
    except ToolchainMismatch:
        raise
    except ray.exceptions.RayError as exc:
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        log.warning("eval: a batch of %d execution(s) was lost (%s); its samples are recorded as %s and a "
                    "rerun executes them again", len(batch), why, INFRASTRUCTURE_ERROR)
        return infrastructure_rows(batch, why)
