"""Triton kernels for the decode step of a single sequence, where every weight is read once per token and the
time is the weights' bytes over the memory bandwidth plus the launches. cuBLAS reaches about 60% of an H200's
bandwidth on these matrix-vector products, and the layer's small operations (LayerNorm, GELU, residual adds,
KV-cache writes, attention) add a launch or more each; here a layer is six kernels:

1. LayerNorm + q/k/v projection, writing k and v straight into the KV cache at the row's position;
2-3. attention of the query over the cache up to its position, split over the cache length so that one
   sequence still spreads over the GPU (flash-decoding: partial softmaxes, then their merge);
4. output projection + residual add;
5. LayerNorm + MLP up projection + FastGELU;
6. MLP down projection + residual add.

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
# Flash-decoding: cache positions per program, and per step of its loop.
ATTENTION_CHUNK = 64
ATTENTION_BLOCK = 64


@triton.jit
def _linear_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, res_ptr, ln_w_ptr, ln_b_ptr, cache_ptr, pos_ptr,
                   N, K, eps, q_cols, kv_width, head_dim, stride_part, stride_head, stride_pos,
                   HAS_BIAS: tl.constexpr, LN: tl.constexpr, GELU: tl.constexpr, RESIDUAL: tl.constexpr,
                   TO_CACHE: tl.constexpr, GELU_SLOPE: tl.constexpr, K_WHOLE: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    n_mask = rn < N
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
        w = tl.load(w_ptr + rn[:, None] * K + kk[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0.0)
        # x rounded to the weights' dtype first, as a matrix product sees it
        wide += w.to(tl.float32) * x.to(w.dtype).to(tl.float32)[None, :]
    acc = tl.sum(wide, 1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_mask, other=0.0).to(tl.float32)
    y = acc.to(w_ptr.dtype.element_ty)
    if GELU:
        yf = y.to(tl.float32)
        y = (yf * tl.sigmoid(GELU_SLOPE * yf)).to(w_ptr.dtype.element_ty)
    if RESIDUAL:
        r = tl.load(res_ptr + rn, mask=n_mask, other=0.0)
        y = (r.to(tl.float32) + y.to(tl.float32)).to(w_ptr.dtype.element_ty)
    if TO_CACHE:
        # Columns [0, q_cols) are the query (to out); the rest are [k|v, head, dim], stored in slot 0's cache at
        # its position.
        is_q = rn < q_cols
        tl.store(out_ptr + rn, y, mask=n_mask & is_q)
        c = tl.where(is_q, 0, rn - q_cols)
        part, within = c // kv_width, c % kv_width
        pos = tl.load(pos_ptr)
        head, d = within // head_dim, within % head_dim
        dest = cache_ptr + part * stride_part + head * stride_head + pos * stride_pos + d
        tl.store(dest, y, mask=n_mask & ~is_q)
    else:
        tl.store(out_ptr + rn, y, mask=n_mask)


@triton.jit
def _attention_split_kernel(q_ptr, cache_ptr, pos_ptr, part_ptr, scale, stride_slot, stride_part, stride_head,
                            stride_pos, HEADS: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr,
                            CHUNK: tl.constexpr, BLOCK_L: tl.constexpr):
    """Flash-decoding, first pass: program (row, head, split) attends over positions [split*CHUNK,
    (split+1)*CHUNK) ∩ [0, pos] and writes its running max, sum and unnormalised output (D + 2 floats)."""
    row, head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    pos = tl.load(pos_ptr + row)
    d = tl.arange(0, D)
    out = part_ptr + ((row * HEADS + head) * SPLITS + split) * (D + 2)
    start = split * CHUNK
    m_i = tl.max(tl.full([BLOCK_L], float("-inf"), tl.float32), 0)
    l_i = tl.sum(tl.zeros([BLOCK_L], tl.float32), 0)
    acc = tl.zeros([D], tl.float32)
    if start <= pos:
        q = tl.load(q_ptr + (row * HEADS + head) * D + d).to(tl.float32) * scale
        k_base = cache_ptr + row * stride_slot + head * stride_head
        v_base = k_base + stride_part
        for l0 in range(start, tl.minimum(start + CHUNK, pos + 1), BLOCK_L):
            ls = l0 + tl.arange(0, BLOCK_L)
            valid = ls <= pos
            k = tl.load(k_base + ls[:, None] * stride_pos + d[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(v_base + ls[:, None] * stride_pos + d[None, :], mask=valid[:, None], other=0.0)
            s = tl.where(valid, tl.sum(k.to(tl.float32) * q[None, :], 1), float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 0))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new)
            acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
            l_i = l_i * alpha + tl.sum(p, 0)
            m_i = m_new
    tl.store(out + d, acc)
    tl.store(out + D, m_i)
    tl.store(out + D + 1, l_i)


@triton.jit
def _attention_combine_kernel(part_ptr, out_ptr, HEADS: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr):
    """Flash-decoding, second pass: the splits of (row, head) merged by their maxima and sums."""
    row, head = tl.program_id(0), tl.program_id(1)
    base = part_ptr + (row * HEADS + head) * SPLITS * (D + 2)
    sp = tl.arange(0, SPLITS)
    d = tl.arange(0, D)
    m = tl.load(base + sp * (D + 2) + D)
    l_s = tl.load(base + sp * (D + 2) + D + 1)
    m_all = tl.max(m, 0)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_all))  # empty splits weigh nothing
    acc = tl.load(base + sp[:, None] * (D + 2) + d[None, :])
    total = tl.sum(acc * w[:, None], 0) / tl.sum(l_s * w, 0)
    tl.store(out_ptr + (row * HEADS + head) * D + d, total.to(out_ptr.dtype.element_ty))


# Triton's interpreter (tests on a CPU) has no benchmarker to autotune with: one fixed shape there.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRETER_CONFIG = {"BLOCK_N": 4, "BLOCK_K": 64}
_linear = _linear_kernel if _INTERPRETED else triton.autotune(configs=_LINEAR_CONFIGS, key=["N", "K"])(_linear_kernel)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, norm=None,
           gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """x [1, K] -> [1, N]: optional LayerNorm of x first (`norm`: (weight, bias, eps), FP32), the bias, then
    FastGELU or `+ residual`."""
    out = torch.empty(1, weight.shape[0], dtype=weight.dtype, device=x.device)
    _launch(x, weight, bias, out, residual, norm, gelu)
    return out


def qkv_to_cache(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, norm, cache: torch.Tensor,
                 positions: torch.Tensor, q_cols: int) -> torch.Tensor:
    """LayerNorm(x) @ Wᵀ + b for x [1, K], whose first `q_cols` columns are returned (the query, [1, q_cols])
    and the rest ([k|v, head, dim]) written into `cache` [slots, 2, heads, length, dim] at slot 0, position
    positions[0]."""
    out = torch.empty(1, max(q_cols, 1), dtype=weight.dtype, device=x.device)
    _launch(x, weight, bias, out, None, norm, False, cache=cache, positions=positions, q_cols=q_cols)
    return out


def attention(q: torch.Tensor, cache: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """q [rows, heads*dim] of slots 0..rows-1 -> [rows, heads*dim]: softmax attention over each slot's cache
    positions 0..positions[r] (the new key included). Split over the cache length in chunks of
    ATTENTION_CHUNK so that a single sequence still spreads over the GPU (flash-decoding); chunks past a row's
    position return at once."""
    rows = q.shape[0]
    _, _, heads, length, dim = cache.shape
    splits = triton.next_power_of_2(triton.cdiv(length, ATTENTION_CHUNK))
    parts = torch.empty(rows, heads, splits, dim + 2, dtype=torch.float32, device=q.device)
    strides = cache.stride()[:4]
    _attention_split_kernel[(rows, heads, splits)](q, cache, positions, parts, dim ** -0.5, *strides, HEADS=heads,
                                                   D=dim, SPLITS=splits, CHUNK=ATTENTION_CHUNK,
                                                   BLOCK_L=ATTENTION_BLOCK)
    out = torch.empty_like(q)
    _attention_combine_kernel[(rows, heads)](parts, out, HEADS=heads, D=dim, SPLITS=splits)
    return out


def _launch(x, weight, bias, out, residual, norm, gelu: bool, cache=None, positions=None, q_cols: int = 0) -> None:
    if x.shape[0] != ROWS:
        raise ValueError(f"the fused decode kernels take a batch of {ROWS} row, not {x.shape[0]}")
    n, k = weight.shape
    x, weight = x.contiguous(), weight.contiguous()
    ln_w, ln_b, eps = norm if norm is not None else (x, x, 0.0)
    to_cache = cache is not None
    kv_width = (n - q_cols) // 2 if to_cache else 1
    head_dim = cache.shape[-1] if to_cache else 1
    strides = cache.stride()[1:4] if to_cache else (0, 0, 0)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _linear[grid](x, weight, bias if bias is not None else weight, out, residual if residual is not None else out,
                  ln_w, ln_b, cache if to_cache else out, positions if to_cache else out,
                  n, k, eps, q_cols, kv_width, head_dim, *strides,
                  HAS_BIAS=bias is not None, LN=norm is not None, GELU=gelu, RESIDUAL=residual is not None,
                  TO_CACHE=to_cache, GELU_SLOPE=FAST_GELU_SLOPE,
                  K_WHOLE=triton.next_power_of_2(k) if norm is not None else 1,
                  **(_INTERPRETER_CONFIG if _INTERPRETED else {}))
