"""Attention over the paged KV cache, and writing new keys/values into it.

The cache of one layer is [num_blocks, 2 (k|v), heads, block_size, head_dim]; a sequence's block table maps
its positions to blocks (block_manager.py). Two implementations of decode attention, chosen by the config's
`attention` switch:

- `triton`: flash-decoding over pages. Program (row, head, split) walks the blocks of its split up to the row's
  context length, keeping a running max and sum; a second kernel merges the splits. A row reads only its own
  real positions, whatever the batch's longest. Fixed grid for a given batch size, so it is captured in CUDA
  graphs; Triton's interpreter runs the same code on a CPU (tests compare it with `decode_sdpa`).
- `sdpa`: PyTorch's scaled_dot_product_attention over keys/values gathered from the pages (the plain path,
  and the fallback if the kernel fails on a new GPU).

Prefill chunks (a run of prompt positions of one sequence, after its earlier chunks) attend through SDPA over
their sequence's gathered keys/values, with causal masking offset by the chunk's start.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU install without Triton: only the SDPA path
    triton = None

# Cache positions one program of the split pass covers (a multiple of the block size).
SPLIT_POSITIONS = 64


def write_kv(cache: torch.Tensor, slots: torch.Tensor, kv: torch.Tensor) -> None:
    """kv [T, 2, heads, dim] into cache [blocks, 2, heads, block_size, dim] at flat slots [T]
    (block * block_size + offset)."""
    bs = cache.shape[3]
    cache[torch.div(slots, bs, rounding_mode="floor"), :, :, slots % bs] = kv


def gather_kv(cache: torch.Tensor, blocks: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `length` positions of one sequence (its block ids [n]) -> k, v [heads, length, dim]."""
    kv = cache[blocks]  # [n, 2, heads, bs, dim]
    n, _, heads, bs, dim = kv.shape
    kv = kv.permute(1, 2, 0, 3, 4).reshape(2, heads, n * bs, dim)[:, :, :length]
    return kv[0], kv[1]


def prefill_attention(q: torch.Tensor, cache: torch.Tensor, blocks: torch.Tensor, start: int) -> torch.Tensor:
    """q [heads, C, dim] of positions start..start+C-1 of one sequence -> [heads, C, dim], each position
    attending to the sequence's positions up to itself (already written to the cache)."""
    c = q.shape[1]
    k, v = gather_kv(cache, blocks, start + c)
    if start == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    keys = torch.arange(start + c, device=q.device)
    allowed = keys[None, :] <= keys[start:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def decode_sdpa(q: torch.Tensor, cache: torch.Tensor, block_tables: torch.Tensor,
                context_lens: torch.Tensor) -> torch.Tensor:
    """q [B, heads, dim], one position per row -> [B, heads, dim]: SDPA over each row's gathered pages, masked
    past its context length. On a GPU every row gathers the table's full width (a fixed shape, so the step can
    be captured in a CUDA graph); on a CPU only the pages up to the batch's longest context."""
    if not block_tables.is_cuda:  # reading the lengths costs no device sync here
        pages = -(-int(context_lens.max()) // cache.shape[3])
        block_tables = block_tables[:, :max(pages, 1)]
    b, width = block_tables.shape
    kv = cache[block_tables]  # [B, width, 2, heads, bs, dim]
    _, _, _, heads, bs, dim = kv.shape
    kv = kv.permute(2, 0, 3, 1, 4, 5).reshape(2, b, heads, width * bs, dim)
    allowed = torch.arange(width * bs, device=q.device)[None, :] < context_lens[:, None]
    mask = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(q[:, :, None], kv[0], kv[1], attn_mask=mask[:, None, None, :])[:, :, 0]


if triton is not None:
    @triton.jit
    def _paged_split_kernel(q_ptr, cache_ptr, tables_ptr, lens_ptr, part_ptr, scale, table_width,
                            stride_block, stride_part, stride_head, stride_pos, HEADS: tl.constexpr,
                            D: tl.constexpr, BS: tl.constexpr, SPLITS: tl.constexpr,
                            BLOCKS_PER_SPLIT: tl.constexpr):
        """Flash-decoding over pages, first pass: program (row, head, split) attends over the blocks
        [split*BLOCKS_PER_SPLIT, ...) of its row, up to the row's context length, and writes its running max,
        sum and unnormalised output (D + 2 floats)."""
        row, head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        length = tl.load(lens_ptr + row)
        d = tl.arange(0, D)
        offs = tl.arange(0, BS)
        out = part_ptr + ((row * HEADS + head) * SPLITS + split) * (D + 2)
        m_i = tl.max(tl.full([BS], float("-inf"), tl.float32), 0)
        l_i = tl.sum(tl.zeros([BS], tl.float32), 0)
        acc = tl.zeros([D], tl.float32)
        first = split * BLOCKS_PER_SPLIT
        if first * BS < length:
            q = tl.load(q_ptr + (row * HEADS + head) * D + d).to(tl.float32) * scale
            last = tl.minimum(first + BLOCKS_PER_SPLIT, (length + BS - 1) // BS)
            for i in range(first, last):
                block = tl.load(tables_ptr + row * table_width + i)
                base = cache_ptr + block.to(tl.int64) * stride_block + head * stride_head
                pos = i * BS + offs
                valid = pos < length
                k = tl.load(base + offs[:, None] * stride_pos + d[None, :], mask=valid[:, None], other=0.0)
                v = tl.load(base + stride_part + offs[:, None] * stride_pos + d[None, :], mask=valid[:, None],
                            other=0.0)
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
    def _combine_kernel(part_ptr, out_ptr, HEADS: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr):
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


def decode_triton(q: torch.Tensor, cache: torch.Tensor, block_tables: torch.Tensor,
                  context_lens: torch.Tensor) -> torch.Tensor:
    """As `decode_sdpa`, through the flash-decoding kernels: each row reads only its own positions."""
    if triton is None:
        raise RuntimeError("Triton is not installed: use attention: sdpa")
    rows, heads, dim = q.shape
    _, _, _, bs, _ = cache.shape
    width = block_tables.shape[1]
    per_split = max(SPLIT_POSITIONS // bs, 1)
    splits = triton.next_power_of_2(triton.cdiv(width, per_split))
    parts = torch.empty(rows, heads, splits, dim + 2, dtype=torch.float32, device=q.device)
    q = q.contiguous()
    s = cache.stride()
    _paged_split_kernel[(rows, heads, splits)](q, cache, block_tables, context_lens, parts, dim ** -0.5, width,
                                               s[0], s[1], s[2], s[3], HEADS=heads, D=dim, BS=bs, SPLITS=splits,
                                               BLOCKS_PER_SPLIT=per_split)
    out = torch.empty_like(q)
    _combine_kernel[(rows, heads)](parts, out, HEADS=heads, D=dim, SPLITS=splits)
    return out


DECODE_ATTENTION = {"triton": decode_triton, "sdpa": decode_sdpa}


def triton_usable(device: torch.device) -> bool:
    """Triton kernels run on a GPU, or on a CPU in Triton's interpreter (TRITON_INTERPRET=1, the tests)."""
    return triton is not None and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")
