"""The train stage: the CodeGeeX model (model.py) trained with DeepSpeed under Ray Train (stage.py),
exported as plain safetensors that serving and evaluation load with `load_model` (no Ray, no DeepSpeed).

Importing this package imports no torch: configs validate on installs without the [train] extra."""

from __future__ import annotations

__all__ = ["load_model", "load_tokenizer"]


def __getattr__(name: str):
    if name in __all__:
        from codemill.train import export

        return getattr(export, name)
    raise AttributeError(f"module 'codemill.train' has no attribute {name!r}")
