"""What the step budget reads of the data: the rows and tokens the train split holds per language (of the
languages trained on) and how many passes over them `steps` × `global_batch_size` rows make.

Read from the tokenize stage's manifest.json (its per-language counts), before any worker starts, so a
language the shards lack is refused at once and a budget that repeats the data many times is visible.
"""

from __future__ import annotations

from codemill.config import ConfigError
from codemill.tokenize import shards
from codemill.tokenize.split import TRAIN
from codemill.train.config import TrainConfig


def data_budget(data_uri: str, cfg: TrainConfig) -> dict:
    """{"languages": {name: {"rows", "tokens"}}, "rows", "tokens", "rows_read", "epochs"} of the train split."""
    held = shards.parse_manifest(shards.read_manifest_bytes(data_uri))["splits"][TRAIN]["languages"]
    names = cfg.data.languages or sorted(held)
    missing = [name for name in names if not held.get(name, {}).get("rows")]
    if missing:
        raise ConfigError(f"data.languages: the train split of {data_uri} has no rows of {missing}; it holds "
                          f"{sorted(n for n, c in held.items() if c.get('rows'))}")
    languages = {name: {"rows": held[name]["rows"], "tokens": held[name]["tokens"]} for name in names}
    rows = sum(c["rows"] for c in languages.values())
    rows_read = cfg.steps * cfg.global_batch_size
    return {"languages": languages, "rows": rows, "tokens": sum(c["tokens"] for c in languages.values()),
            "rows_read": rows_read, "epochs": rows_read / rows}


def describe(budget: dict) -> str:
    """One line for the log."""
    per_language = ", ".join(f"{name} {c['tokens']:,}" for name, c in budget["languages"].items())
    return (f"tokens available: {budget['tokens']:,} ({per_language}) in {budget['rows']:,} rows; the step "
            f"budget reads {budget['rows_read']:,} rows = {budget['epochs']:.2f} epochs")
