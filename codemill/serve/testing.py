"""Random-weight exports for tests, smoke checks and speed benchmarks (speed does not depend on values)."""

from __future__ import annotations

import os
import tempfile

import torch

from codemill.train.model import CodeGeeX, ModelConfig


def random_model(config: ModelConfig, seed: int = 0, init_std: float | None = None) -> CodeGeeX:
    """A CodeGeeX with random weights in eval mode. `init_std` widens the init so a tiny model's next-token
    distributions are peaked like a trained model's instead of near-uniform."""
    torch.manual_seed(seed)
    model = CodeGeeX(config).eval()
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(std=init_std)
    return model


def write_random_export(uri: str, config: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float32,
                        init_std: float | None = None, model: CodeGeeX | None = None) -> CodeGeeX:
    """Write `model` (default: a random one) as an export with CodeGeeX's tokenizer; returns the model."""
    from codemill.tokenize.tokenizer import codegeex_tokenizer
    from codemill.train.export import write_export

    model = model or random_model(config, seed, init_std)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "codegeex-tokenizer.json")
        codegeex_tokenizer().save(path)
        state = {k: v.to(dtype) for k, v in model.state_dict().items()}
        write_export(state, config, path, uri)
    return model
