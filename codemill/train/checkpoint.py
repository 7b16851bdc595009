"""A training checkpoint: DeepSpeed's own files (model, ZeRO-partitioned optimizer state of every rank)
plus codemill's state (step, data position) and the metrics so far, in one folder per checkpoint.

Each rank writes its part into its own local folder; Ray Train merges the folders of all ranks into one
checkpoint on the run's storage, and hands the merged folder back on restart.
"""

from __future__ import annotations

import json
import os

from codemill.train import metrics

DEEPSPEED_TAG = "deepspeed"
STATE_FILE = "train_state.json"


def save(engine, directory: str, state: dict, records: list[dict] | None) -> None:
    """Collective: every rank calls it. `state` and `records` are written by the rank that passes them."""
    engine.save_checkpoint(directory, tag=DEEPSPEED_TAG, save_latest=False)
    if records is not None:
        with open(os.path.join(directory, STATE_FILE), "w") as f:
            json.dump(state, f, indent=2, sort_keys=True)
        with open(os.path.join(directory, metrics.METRICS_FILE), "wb") as f:
            f.write(metrics.to_jsonl(records))


def load(engine, directory: str) -> tuple[dict, list[dict]]:
    """Restore the engine from `directory`; returns (codemill state, metric records up to that step)."""
    path, _ = engine.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=False)
    if path is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint '{DEEPSPEED_TAG}' in {directory}")
    with open(os.path.join(directory, metrics.METRICS_FILE), "rb") as f:
        records = metrics.from_jsonl(f.read())
    return read_state(directory), records


def read_state(directory: str) -> dict:
    """codemill's own part of a checkpoint: JSON, never pickle (DeepSpeed's part is torch.load's)."""
    with open(os.path.join(directory, STATE_FILE)) as f:
        return json.load(f)
