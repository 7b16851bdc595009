"""`export/`: the trained model as plain files that load with neither Ray nor DeepSpeed.

    export/model.safetensors   consolidated weights (the training dtype: fp16, bf16 or fp32)
    export/config.json         the ModelConfig, plus the dtype and the run's step
    export/tokenizer.json      the tokenizer the shards were made with
"""

from __future__ import annotations

import torch

from codemill import storage
from codemill.train.model import CodeGeeX, ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"


def write_export(state_dict: dict[str, torch.Tensor], config: ModelConfig, tokenizer_path: str,
                 uri: str, extra: dict | None = None) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    storage.write_bytes(storage.join(uri, WEIGHTS_FILE), save(tensors))
    storage.write_json(storage.join(uri, CONFIG_FILE), {**config.to_dict(), "dtype": dtype, **(extra or {})})
    with open(tokenizer_path, "rb") as f:
        storage.write_bytes(storage.join(uri, TOKENIZER_FILE), f.read())


def load_config(uri: str) -> ModelConfig:
    return ModelConfig.from_dict(storage.read_json(storage.join(uri, CONFIG_FILE)))


def load_model(uri: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> CodeGeeX:
    """The exported model in eval mode, on `device`, in `dtype` (default: the dtype it was saved in)."""
    from safetensors.torch import load

    config = load_config(uri)
    state = load(storage.read_bytes(storage.join(uri, WEIGHTS_FILE)))
    with torch.device("meta"):
        model = CodeGeeX(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def load_tokenizer(uri: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(storage.read_bytes(storage.join(uri, TOKENIZER_FILE)).decode())


def export_metadata(uri: str) -> dict:
    return storage.read_json(storage.join(uri, CONFIG_FILE))
