"""Training metrics: one record per step in `metrics.jsonl`, TensorBoard scalars, the loss-curve PNG."""

from __future__ import annotations

import json
import os
import shutil

from codemill import storage
from codemill.plots import png_bytes, pyplot
from codemill.stages import TRAIN_FIGURE, TRAIN_METRICS

METRICS_FILE = TRAIN_METRICS
LOSS_CURVE_FILE = TRAIN_FIGURE


def to_jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def from_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def read_records(uri: str) -> list[dict]:
    return from_jsonl(storage.read_bytes(uri)) if storage.exists(uri) else []


class TensorBoardLog:
    """Scalars written to a local folder, mirrored to `uri` (local or s3://) on `sync()`."""

    def __init__(self, local_dir: str, uri: str):
        from torch.utils.tensorboard import SummaryWriter

        self.local_dir, self.uri = local_dir, uri
        self.writer = SummaryWriter(local_dir)

    def add(self, record: dict) -> None:
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        """Flush, mirror, and remove the local folder."""
        self.sync()
        self.writer.close()
        shutil.rmtree(self.local_dir, ignore_errors=True)

    def sync(self) -> None:
        self.writer.flush()
        for name in os.listdir(self.local_dir):
            with open(os.path.join(self.local_dir, name), "rb") as f:
                storage.write_bytes(storage.join(self.uri, name), f.read())


def loss_curve_png(records: list[dict], title: str) -> bytes:
    """Training loss per step and validation loss per evaluation, as a PNG."""
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return png_bytes(fig)
