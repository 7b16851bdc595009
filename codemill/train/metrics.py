"""Training metrics: one record per step in `metrics.jsonl`, TensorBoard scalars, the loss-curve PNG."""

from __future__ import annotations

import io
import json
import os

from codemill import storage

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"


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

    def sync(self) -> None:
        self.writer.flush()
        for name in os.listdir(self.local_dir):
            with open(os.path.join(self.local_dir, name), "rb") as f:
                storage.write_bytes(storage.join(self.uri, name), f.read())


def loss_curve_png(records: list[dict], title: str) -> bytes:
    """Training loss per step and validation loss per evaluation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
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
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
