"""FLOP accounting: what one token of training costs, and how much of the hardware a run uses (MFU).

Counts the matrix multiplications only (they are all but a rounding error of the work), forward pass ×3
for forward + backward, and the attention scores over the full s × s square (the PaLM / Megatron
convention, also used for the baseline, so ratios stay fair). Activation recomputation is not counted:
this is model FLOPs utilisation, not hardware FLOPs utilisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codemill.train.model import ModelConfig

FORWARD_AND_BACKWARD = 3  # backward costs twice the forward

# Dense (no sparsity) BF16 tensor-core peaks, FLOP/s per GPU, by a substring of the device name.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
}


def forward_flops_per_token(num_layers: int, hidden: int, ffn: int, vocab: int, seq_length: int) -> float:
    per_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn)  # qkv (or q + kv) and output, up and down
    per_layer += 2 * 2 * seq_length * hidden                  # q·kᵀ and probabilities·v
    return num_layers * per_layer + 2 * hidden * vocab         # logits against the word embedding


def training_flops_per_token(cfg: ModelConfig, seq_length: int) -> float:
    return FORWARD_AND_BACKWARD * forward_flops_per_token(
        cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size, cfg.vocab_size, seq_length)


def peak_flops(device_name: str) -> float | None:
    """The dense BF16 peak of a GPU named like torch.cuda.get_device_name(); None when unknown."""
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops
    return None


def mfu(tokens_per_second: float, flops_per_token: float, peak_per_device: float, devices: int) -> float:
    return tokens_per_second * flops_per_token / (peak_per_device * devices)
