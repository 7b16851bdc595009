"""Triton kernels for the decode step of a single sequence, where every weight is read once per token and the
time is the weights' bytes over the memory bandwidth plus the launches. cuBLAS reaches about 60% of an H200's
bandwidth on these matrix-vector products, and the layer's small operations (LayerNorm, GELU, residual adds,
KV-cache writes) add a launch or more each; here a layer is five kernels plus attention over its pages
(attention.py):

1. LayerNorm + q/k/v projection, writing k and v straight into the paged KV cache at the row's slot;
2. output projection + residual add;
3. LayerNorm + MLP up projection + FastGELU;
4. MLP down projection + residual add.

The same kernel reads INT8 weights (one scale per output row, SPEC §7) and applies the scale in its epilogue,
so an INT8 decode reads half the bytes of a bf16 one: the dequantisation is fused, never materialised.
Rounding follows the eager decoder: LayerNorm in FP32, the projection's output rounded to the compute dtype
before the activation or the residual add.

Importing this module needs Triton; `codemill.serve.decoder` imports it only on a GPU (tests run the same
kernels on the CPU through Triton's interpreter, TRITON_INTERPRET=1).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from codemill.train.model import FAST_GELU_SLOPE

# The batch this path decodes: one sequence, where every weight byte serves one token. Measured on an H200,
# a tensor-core tile of 16 padded rows was slower than cuBLAS already at 8 rows (benchmarks/RESULTS.md), so
# larger batches decode through the compiled cuBLAS path.
ROWS = 1
# Kernel shapes, chosen per (N, K, rows) by Triton's autotuner during the warm-up step before capture.
_LINEAR_CONFIGS = [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
                   for n, k, w, s in ((4, 512, 4, 2), (8, 512, 4, 2), (8, 256, 4, 3), (16, 256, 4, 2),
                                      (4, 1024, 4, 2), (8, 1024, 8, 2), (2, 1024, 4, 2), (16, 512, 8, 2))]


@triton.jit
def _linear_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, res_ptr, ln_w_ptr, ln_b_ptr, cache_ptr, slot_ptr,
                   N, K, eps, q_cols, kv_width, head_dim, block_size, stride_block, stride_part, stride_head,
                   stride_pos, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, LN: tl.constexpr,
                   GELU: tl.constexpr, RESIDUAL: tl.constexpr, TO_CACHE: tl.constexpr, GELU_SLOPE: tl.constexpr,
                   K_WHOLE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    n_mask = rn < N
    out_ty = out_ptr.dtype.element_ty
    if LN:  # the row is short (K ≤ a few thousand): every program loads it whole for its statistics
        kw = tl.arange(0, K_WHOLE)
        whole = tl.load(x_ptr + kw, mask=kw < K, other=0.0).to(tl.float32)
        mean = tl.sum(whole, 0) / K
        centred = tl.where(kw < K, whole - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 0) / K + eps)
    # Products summed elementwise, reduced once at the end: small tiles, many programs in flight.
    wide = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        k_mask = kk < K
        x = tl.load(x_ptr + kk, mask=k_mask, other=0.0)
        if LN:
            g = tl.load(ln_w_ptr + kk, mask=k_mask, other=0.0)
            b = tl.load(ln_b_ptr + kk, mask=k_mask, other=0.0)
            x = (x.to(tl.float32) - mean) * rstd * g + b
        w = tl.load(w_ptr + rn[:, None] * K + kk[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0)
        # x rounded to the compute dtype first, as a matrix product in that dtype sees it
        wide += w.to(tl.float32) * x.to(out_ty).to(tl.float32)[None, :]
    acc = tl.sum(wide, 1)
    if HAS_SCALE:  # INT8 weights: W = q * scale[row], so the row's product is scaled once here
        acc = acc * tl.load(scale_ptr + rn, mask=n_mask, other=0.0).to(tl.float32)
        acc = acc.to(out_ty).to(tl.float32)  # the eager INT8 path rounds the scaled product before the bias
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_mask, other=0.0).to(tl.float32)
    y = acc.to(out_ty)
    if GELU:
        yf = y.to(tl.float32)
        y = (yf * tl.sigmoid(GELU_SLOPE * yf)).to(out_ty)
    if RESIDUAL:
        r = tl.load(res_ptr + rn, mask=n_mask, other=0.0)
        y = (r.to(tl.float32) + y.to(tl.float32)).to(out_ty)
    if TO_CACHE:
        # Columns [0, q_cols) are the query (to out); the rest are [k|v, head, dim], stored in the paged cache
        # [blocks, k|v, head, block_size, dim] at the row's slot.
        is_q = rn < q_cols
        tl.store(out_ptr + rn, y, mask=n_mask & is_q)
        c = tl.where(is_q, 0, rn - q_cols)
        part, within = c // kv_width, c % kv_width
        slot = tl.load(slot_ptr)
        block, offset = slot // block_size, slot % block_size
        head, d = within // head_dim, within % head_dim
        dest = cache_ptr + block * stride_block + part * stride_part + head * stride_head + offset * stride_pos + d
        tl.store(dest, y, mask=n_mask & ~is_q)
    else:
        tl.store(out_ptr + rn, y, mask=n_mask)


# Triton's interpreter (tests on a CPU) has no benchmarker to autotune with: one fixed shape there.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRETER_CONFIG = {"BLOCK_N": 32, "BLOCK_K": 64}
_linear = _linear_kernel if _INTERPRETED else triton.autotune(configs=_LINEAR_CONFIGS, key=["N", "K"])(_linear_kernel)


def _weights(lin) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(weight or INT8 weight, its per-row scale or None, bias or None) of a quant.DenseLinear/Int8Linear."""
    if hasattr(lin, "qweight"):
        return lin.qweight, lin.scale, lin.bias
    return lin.weight, None, lin.bias


def linear(x: torch.Tensor, lin, *, norm=None, gelu: bool = False, residual: torch.Tensor | None = None,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """x [1, K] -> [1, N] through `lin` (quant.DenseLinear or Int8Linear): optional LayerNorm of x first
    (`norm`: (weight, bias, eps), FP32), the bias, then FastGELU or `+ residual`."""
    weight, _, _ = _weights(lin)
    out = torch.empty(1, weight.shape[0], dtype=dtype or x.dtype, device=x.device)
    _launch(x, lin, out, residual, norm, gelu)
    return out


def qkv_to_cache(x: torch.Tensor, lin, norm, cache: torch.Tensor, slots: torch.Tensor, q_cols: int) -> torch.Tensor:
    """LayerNorm(x) @ Wᵀ + b for x [1, K], whose first `q_cols` columns are returned (the query, [1, q_cols])
    and the rest ([k|v, head, dim]) written into the paged `cache` [blocks, 2, heads, block_size, dim] at
    slots[0] (block * block_size + offset)."""
    out = torch.empty(1, max(q_cols, 1), dtype=x.dtype, device=x.device)
    _launch(x, lin, out, None, norm, False, cache=cache, slots=slots, q_cols=q_cols)
    return out


def _launch(x, lin, out, residual, norm, gelu: bool, cache=None, slots=None, q_cols: int = 0) -> None:
    if x.shape[0] != ROWS:
        raise ValueError(f"the fused decode kernels take a batch of {ROWS} row, not {x.shape[0]}")
    weight, scale, bias = _weights(lin)
    n, k = weight.shape
    x, weight = x.contiguous(), weight.contiguous()
    ln_w, ln_b, eps = norm if norm is not None else (x, x, 0.0)
    to_cache = cache is not None
    kv_width = (n - q_cols) // 2 if to_cache else 1
    head_dim = cache.shape[-1] if to_cache else 1
    block_size = cache.shape[3] if to_cache else 1
    strides = cache.stride()[:4] if to_cache else (0, 0, 0, 0)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _linear[grid](x, weight, scale if scale is not None else out, bias if bias is not None else out, out,
                  residual if residual is not None else out, ln_w, ln_b, cache if to_cache else out,
                  slots if to_cache else out, n, k, eps, q_cols, kv_width, head_dim, block_size, *strides,
                  HAS_SCALE=scale is not None, HAS_BIAS=bias is not None, LN=norm is not None, GELU=gelu,
                  RESIDUAL=residual is not None, TO_CACHE=to_cache, GELU_SLOPE=FAST_GELU_SLOPE,
                  K_WHOLE=triton.next_power_of_2(k) if norm is not None else 1,
                  **(_INTERPRETER_CONFIG if _INTERPRETED else {}))
