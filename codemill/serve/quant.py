"""Linear layers for generation: dense, or INT8 weight-only (SPEC §7).

INT8: W_q = round(W / λ) with one λ = max|W_row| / 127 per output row, stored as int8 + one scale per row;
activations stay in the serving dtype. The matrix product reads the int8 weights and converts them to the
compute dtype inside the kernel (`int8_matmul`, Triton: tiles of int8 loaded, converted in registers, fed to
the tensor cores, the row scales applied to the accumulator), so INT8 reads half the bytes of bf16 and never
writes a dequantised copy. A batch of one row goes through fused.py's matrix-vector kernel, which reads int8
weights the same way. Without Triton (a CPU install) the weights are converted before a plain matmul.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

INT8_MAX = 127


class DenseLinear:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def nbytes(self) -> int:
        return _nbytes(self.weight, self.bias)


class Int8Linear:
    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, fused: bool):
        self.qweight, self.scale, self.bias, self.fused = qweight, scale, bias, fused

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            shape = x.shape
            out = int8_matmul(x.reshape(-1, shape[-1]), self.qweight, self.scale, self.bias)
            return out.view(*shape[:-1], out.shape[-1])
        return dequantized_linear(x, self.qweight, self.scale, self.bias)

    def nbytes(self) -> int:
        return _nbytes(self.qweight, self.scale, self.bias)


def dequantized_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
                       bias: torch.Tensor | None) -> torch.Tensor:
    """The plain PyTorch reference: the int8 weights converted to x's dtype, then the row scales."""
    out = F.linear(x, qweight.to(x.dtype)) * scale
    return out + bias if bias is not None else out


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float weight -> (int8 [out, in], fp32 scale [out]) with λ = max|row| / 127."""
    w = weight.float()
    scale = w.abs().amax(dim=1) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
    q = torch.round(w / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def fused_int8_available(device: torch.device) -> bool:
    """On a GPU with Triton (tests run the kernel on a CPU in Triton's interpreter, asking for it by name)."""
    return triton is not None and device.type == "cuda"


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, device: torch.device,
                int8: bool, fused_int8: bool | None = None) -> DenseLinear | Int8Linear:
    b = bias.to(device=device, dtype=dtype) if bias is not None else None
    if not int8:
        return DenseLinear(weight.to(device=device, dtype=dtype).contiguous(), b)
    q, scale = quantize_rows(weight)
    fused = fused_int8_available(torch.device(device)) if fused_int8 is None else fused_int8
    return Int8Linear(q.to(device).contiguous(), scale.to(device=device, dtype=dtype), b, fused)


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


# ----------------------------------------------------------------------------- the fused INT8 kernel
if triton is not None:
    _CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
                for m, n, k, w, s in ((16, 64, 128, 4, 4), (16, 128, 128, 4, 3), (32, 64, 128, 4, 4),
                                      (64, 64, 64, 4, 3), (64, 128, 64, 4, 3), (128, 128, 64, 8, 3),
                                      (128, 256, 64, 8, 3), (16, 256, 64, 4, 3))]

    @triton.jit
    def _int8_matmul_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om,
                            M_BUCKET, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr):
        pid_m, pid_n = tl.program_id(0), tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        out_ty = out_ptr.dtype.element_ty
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            x = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K),
                        other=0.0)
            w = tl.load(w_ptr + rn[None, :] * stride_wn + kk[:, None], mask=(rn[None, :] < N) & (kk[:, None] < K),
                        other=0)
            acc += tl.dot(x.to(out_ty), w.to(out_ty))  # int8 -> compute dtype in registers: exact (|q| ≤ 127)
        acc = acc * tl.load(scale_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], acc.to(out_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    _INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
    # Tuned per weight shape and per power-of-two bucket of rows (prompt lengths vary; a tune per length would
    # cost a benchmark per new prompt).
    _tuned = triton.autotune(configs=_CONFIGS, key=["N", "K", "M_BUCKET"])
    _matmul = _int8_matmul_kernel if _INTERPRETED else _tuned(_int8_matmul_kernel)


def int8_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, K] (compute dtype) @ (qweight [N, K] int8 * scale [N, 1])ᵀ + bias -> [M, N] in x's dtype."""
    if triton is None:
        return dequantized_linear(x, qweight, scale, bias)
    m, k = x.shape
    n = qweight.shape[0]
    x = x.contiguous()
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if _INTERPRETED:
        meta = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}
        grid = (triton.cdiv(m, 16), triton.cdiv(n, 32))
        _int8_matmul_kernel[grid](x, qweight, scale, bias if bias is not None else out, out, m, n, k, x.stride(0),
                                  qweight.stride(0), out.stride(0), 1, HAS_BIAS=bias is not None, **meta)
        return out
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))  # noqa: E731
    _matmul[grid](x, qweight, scale, bias if bias is not None else out, out, m, n, k, x.stride(0), qweight.stride(0),
                  out.stride(0), min(triton.next_power_of_2(m), 1024), HAS_BIAS=bias is not None)
    return out
