"""Linear layers for generation: dense, or INT8 weight-only (SPEC §7).

INT8: W_q = round(W / λ) with one λ = max|W_row| / 127 per output row, stored as int8 + one scale per row;
activations stay in the serving dtype. The matmul runs on the dequantised weight (int8 -> dtype, then the
scale is applied to the output, which equals scaling each row of W), so the numbers match the paper's
scheme exactly and the weights take a quarter (fp32) or half (bf16/fp16) of the memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INT8_MAX = 127


class DenseLinear:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def nbytes(self) -> int:
        return _nbytes(self.weight, self.bias)


class Int8Linear:
    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        self.qweight, self.scale, self.bias = qweight, scale, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.qweight.to(x.dtype)) * self.scale
        return out + self.bias if self.bias is not None else out

    def nbytes(self) -> int:
        return _nbytes(self.qweight, self.scale, self.bias)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float weight -> (int8 [out, in], fp32 scale [out]) with λ = max|row| / 127."""
    w = weight.float()
    scale = w.abs().amax(dim=1) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
    q = torch.round(w / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, device: torch.device,
                int8: bool) -> DenseLinear | Int8Linear:
    b = bias.to(device=device, dtype=dtype) if bias is not None else None
    if not int8:
        return DenseLinear(weight.to(device=device, dtype=dtype).contiguous(), b)
    q, scale = quantize_rows(weight)
    return Int8Linear(q.to(device), scale.to(device=device, dtype=dtype), b)


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
