"""The GPU kernels of the serve engine against plain PyTorch, run on the CPU through Triton's interpreter (the
same kernel code the GPU compiles): fused.py's single-row projections (dense and INT8), the paged
flash-decoding attention of attention.py, quant.py's fused INT8 matmul, and a whole decode step through them."""

from __future__ import annotations

import dataclasses
import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from codemill.serve import attention
from codemill.serve.decoder import Decoder, ForwardBatch, PrefillChunk
from codemill.serve.quant import DenseLinear, Int8Linear, dequantized_linear, int8_matmul, quantize_rows
from codemill.train.model import FAST_GELU_SLOPE, PRESETS, CodeGeeX


@pytest.fixture(scope="module")
def fused():
    # conftest.py switches Triton's interpreter on before anything imports Triton.
    assert os.environ.get("TRITON_INTERPRET") == "1", "run under tests/conftest.py (TRITON_INTERPRET=1)"
    return importlib.import_module("codemill.serve.fused")


def test_linear_with_layernorm_gelu_and_residual(fused):
    torch.manual_seed(0)
    k, n = 100, 37  # neither a multiple of the kernel's tiles
    x, w, b = torch.randn(1, k), torch.randn(n, k) / 10, torch.randn(n)
    lin = DenseLinear(w, b)
    g, gb = torch.randn(k), torch.randn(k)
    assert torch.allclose(fused.linear(x, lin), F.linear(x, w, b), atol=1e-5)
    normed = F.layer_norm(x, (k,), g, gb, 1e-5)
    assert torch.allclose(fused.linear(x, DenseLinear(w, None), norm=(g, gb, 1e-5)), F.linear(normed, w), atol=1e-5)
    u = F.linear(normed, w, b)
    assert torch.allclose(fused.linear(x, lin, norm=(g, gb, 1e-5), gelu=True),
                          u * torch.sigmoid(FAST_GELU_SLOPE * u), atol=1e-5)
    res = torch.randn(1, n)
    assert torch.allclose(fused.linear(x, lin, residual=res), res + F.linear(x, w, b), atol=1e-5)
    with pytest.raises(ValueError, match="batch of 1 row"):
        fused.linear(torch.randn(2, k), lin)


def test_int8_weights_through_the_fused_row_kernel(fused):
    torch.manual_seed(3)
    k, n = 96, 50
    x, w, b = torch.randn(1, k), torch.randn(n, k) / 10, torch.randn(n)
    q, scale = quantize_rows(w)
    lin = Int8Linear(q, scale, b, fused=True)
    want = dequantized_linear(x, q, scale, b)
    assert torch.allclose(fused.linear(x, lin), want, atol=1e-5)
    assert torch.allclose(fused.linear(x, lin, residual=want), 2 * want, atol=1e-5)


@pytest.mark.parametrize("m", [1, 5, 33])
def test_fused_int8_matmul_equals_dequantised_matmul(m):
    torch.manual_seed(m)
    k, n = 72, 45
    x, w, b = torch.randn(m, k), torch.randn(n, k) / 10, torch.randn(n)
    q, scale = quantize_rows(w)
    assert torch.allclose(int8_matmul(x, q, scale, b), dequantized_linear(x, q, scale, b), atol=1e-4)
    assert torch.allclose(int8_matmul(x, q, scale, None), dequantized_linear(x, q, scale, None), atol=1e-4)
    assert float((dequantized_linear(x, q, scale, b) - F.linear(x, w, b)).abs().max()) < 0.05  # the scheme


def test_projection_writes_keys_and_values_into_the_paged_cache_at_the_slot(fused):
    torch.manual_seed(1)
    heads, dim, hidden, bs = 2, 8, 16, 4
    cache = torch.zeros(6, 2, heads, bs, dim)
    x, w, b = torch.randn(1, hidden), torch.randn(3 * hidden, hidden), torch.randn(3 * hidden)
    g, gb = torch.ones(hidden), torch.zeros(hidden)
    slot = 3 * bs + 2  # block 3, offset 2
    q = fused.qkv_to_cache(x, DenseLinear(w, b), (g, gb, 1e-5), cache, torch.tensor([slot]), q_cols=hidden)
    full = F.linear(F.layer_norm(x, (hidden,), g, gb, 1e-5), w, b).view(3, heads, dim)
    assert torch.allclose(q.view(heads, dim), full[0], atol=1e-5)
    assert torch.allclose(cache[3, :, :, 2], full[1:], atol=1e-5)
    cache[3, :, :, 2] = 0
    assert not cache.any()  # nothing else written


@pytest.mark.parametrize("lens", [[1], [16, 3, 70], [64, 65, 128, 1]])
def test_paged_flash_decoding_equals_sdpa_over_gathered_pages(lens):
    torch.manual_seed(sum(lens))
    heads, dim, bs, width = 2, 16, 16, 8
    cache = torch.randn(40, 2, heads, bs, dim)
    perm = torch.randperm(39)[:len(lens) * width] + 1  # scattered blocks, none of them block 0
    tables = perm.view(len(lens), width).to(torch.int32)
    q = torch.randn(len(lens), heads, dim)
    context = torch.tensor(lens, dtype=torch.int32)
    got = attention.decode_triton(q, cache, tables, context)
    want = attention.decode_sdpa(q, cache, tables, context)
    assert torch.allclose(got, want, atol=1e-5)
    for r, n in enumerate(lens):  # and both are attention over the row's own positions
        k, v = attention.gather_kv(cache, tables[r].long(), n)
        ref = F.scaled_dot_product_attention(q[r][:, None], k, v)[:, 0]
        assert torch.allclose(got[r], ref, atol=1e-5)


def _decode_batch(tokens, positions, tables, bs):
    slots = torch.tensor([int(tables[i, p // bs]) * bs + p % bs for i, p in enumerate(positions)])
    return ForwardBatch(torch.tensor(tokens), torch.tensor(positions), slots, len(tokens), tables,
                        torch.tensor([p + 1 for p in positions], dtype=torch.int32), [])


@pytest.mark.parametrize("int8", [False, True])
def test_a_decode_step_through_the_kernels_equals_the_plain_path(fused, int8):
    """Prefill two prompts (two blocks each and a bit) on the SDPA path, then decode from copies of its cache:
    a batch of two through the Triton attention, and a batch of one through fused.py's single-row kernels, give
    the SDPA path's logits and keys/values. Triton's interpreter pays a fixed cost per kernel launch, so each
    path runs once (the batch of two only with dense weights: INT8 changes no attention)."""
    torch.manual_seed(2)
    cfg = dataclasses.replace(PRESETS["tiny"], vocab_size=256)
    state = CodeGeeX(cfg).state_dict()
    bs = 16
    variants = {"sdpa": dict(attention="sdpa", fused=False), "fused": dict(attention="triton", fused=True)}
    if not int8:
        variants["triton"] = dict(attention="triton", fused=False)
    decoders = {name: Decoder(cfg, state, "cpu", torch.float32, int8=int8, **kw) for name, kw in variants.items()}
    for d in decoders.values():
        d.allocate_cache(10, bs)
    plain = decoders["sdpa"]
    tables = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=torch.int32)
    for row, n in enumerate((40, 35)):
        p = torch.randint(0, 256, (n,))
        slots = torch.tensor([int(tables[row, i // bs]) * bs + i % bs for i in range(n)])
        plain.forward(ForwardBatch(p, torch.arange(n), slots, 0, tables[:0], tables[0, :0],
                                   [PrefillChunk(0, n, 0, tables[row, :3].long())]))
    if not int8:
        decoders["triton"].kv_cache.copy_(plain.kv_cache)
        two = _decode_batch([7, 9], [40, 35], tables, bs)
        assert torch.allclose(plain.forward(two), decoders["triton"].forward(two), atol=1e-4)
        assert torch.allclose(plain.kv_cache, decoders["triton"].kv_cache, atol=1e-4)
    decoders["fused"].kv_cache.copy_(plain.kv_cache)
    one = _decode_batch([11], [41], tables[:1], bs)  # position 41: the third block, a page boundary behind
    assert torch.allclose(plain.forward(one), decoders["fused"].forward(one), atol=1e-4)
    assert torch.allclose(plain.kv_cache, decoders["fused"].kv_cache, atol=1e-4)
