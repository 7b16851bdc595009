"""codemill's own metrics through Ray's metrics API: on the Ray dashboard and its Prometheus endpoint (Ray
exports them as `ray_codemill_*`), each labelled with the stage and the run (a DAG run's id, else
`standalone`). Publishing never fails a stage: without a Ray worker context there is nothing to publish to.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger("codemill")

RUN_ID_ENV = "CODEMILL_RUN_ID"  # set by the DAG runner in each stage job's environment
STANDALONE = "standalone"


def run_id() -> str:
    return os.environ.get(RUN_ID_ENV) or STANDALONE


@functools.lru_cache(maxsize=1)
def _gauges():
    from ray.util.metrics import Gauge

    return {
        "count": Gauge("codemill_stage_count", "a stage's final counts (rows and bytes in and out, drops per reason, "
                       "duplicates, tokens)", tag_keys=("stage", "run", "count")),
        "seconds": Gauge("codemill_stage_seconds", "a stage's wall time, by phase", tag_keys=("stage", "run", "phase")),
        "loss": Gauge("codemill_train_loss", "training loss (and validation loss, split=validation)",
                      tag_keys=("stage", "run", "split")),
        "mfu": Gauge("codemill_train_mfu", "model FLOPs utilisation", tag_keys=("stage", "run")),
        "tokens_per_s": Gauge("codemill_train_tokens_per_second", "training throughput", tag_keys=("stage", "run")),
        "gpu_memory": Gauge("codemill_train_gpu_memory_bytes", "peak GPU memory of rank 0",
                            tag_keys=("stage", "run")),
    }


def _numbers(counts: dict, prefix: str = "") -> dict[str, float]:
    """Numeric counts, one level of nesting flattened (`rejected_by_reason.size`)."""
    flat = {}
    for key, value in counts.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            flat[prefix + key] = float(value)
        elif isinstance(value, dict) and not prefix:
            flat.update(_numbers(value, f"{key}."))
    return flat


def publish_stage(stage: str, counts: dict, timings: dict) -> None:
    """A finished stage's counts and phase timings."""
    try:
        import ray

        if not ray.is_initialized():
            return
        gauges, run = _gauges(), run_id()
        for name, value in _numbers(counts).items():
            gauges["count"].set(value, tags={"stage": stage, "run": run, "count": name})
        for phase, seconds in timings.items():
            if isinstance(seconds, (int, float)) and phase.endswith(("_s", "seconds")):
                gauges["seconds"].set(float(seconds), tags={"stage": stage, "run": run, "phase": phase})
    except Exception as exc:  # metrics are an aid: a broken exporter must not fail the stage
        log.warning("%s: could not publish metrics: %s", stage, exc)


def publish_training(record: dict, stage: str = "train") -> None:
    """One training report (rank 0): loss, validation loss, MFU, throughput, peak GPU memory."""
    try:
        gauges, tags = _gauges(), {"stage": stage, "run": run_id()}
        if "loss" in record:
            gauges["loss"].set(float(record["loss"]), tags={**tags, "split": "train"})
        if "val_loss" in record:
            gauges["loss"].set(float(record["val_loss"]), tags={**tags, "split": "validation"})
        if "mfu" in record:
            gauges["mfu"].set(float(record["mfu"]), tags=tags)
        if "tokens_per_s" in record:
            gauges["tokens_per_s"].set(float(record["tokens_per_s"]), tags=tags)
        if record.get("gpu_memory_bytes"):
            gauges["gpu_memory"].set(float(record["gpu_memory_bytes"]), tags=tags)
    except Exception as exc:
        log.warning("train: could not publish metrics: %s", exc)
