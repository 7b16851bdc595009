"""The train stage: the CodeGeeX model (model.py) trained with DeepSpeed under Ray Train (stage.py),
exported as plain safetensors that serving and evaluation load with `load_model` (no Ray, no DeepSpeed)."""

from codemill.train.export import load_model, load_tokenizer

__all__ = ["load_model", "load_tokenizer"]
