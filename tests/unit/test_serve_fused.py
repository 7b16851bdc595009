"""The fused single-sequence decode kernels (codemill/serve/fused.py) against PyTorch, run on the CPU through
Triton's interpreter: the same kernel code the GPU compiles."""

from __future__ import annotations

import dataclasses
import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from codemill.serve.decoder import Decoder
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
    g, gb = torch.randn(k), torch.randn(k)
    assert torch.allclose(fused.linear(x, w, b), F.linear(x, w, b), atol=1e-5)
    normed = F.layer_norm(x, (k,), g, gb, 1e-5)
    assert torch.allclose(fused.linear(x, w, None, norm=(g, gb, 1e-5)), F.linear(normed, w), atol=1e-5)
    u = F.linear(normed, w, b)
    assert torch.allclose(fused.linear(x, w, b, norm=(g, gb, 1e-5), gelu=True),
                          u * torch.sigmoid(FAST_GELU_SLOPE * u), atol=1e-5)
    res = torch.randn(1, n)
    assert torch.allclose(fused.linear(x, w, b, residual=res), res + F.linear(x, w, b), atol=1e-5)
    with pytest.raises(ValueError, match="batch of 1 row"):
        fused.linear(torch.randn(2, k), w, b)


def test_projection_writes_keys_and_values_into_the_cache_at_the_position(fused):
    torch.manual_seed(1)
    heads, dim, hidden = 2, 8, 16
    cache = torch.zeros(3, 2, heads, 40, dim)
    x, w, b = torch.randn(1, hidden), torch.randn(3 * hidden, hidden), torch.randn(3 * hidden)
    g, gb = torch.ones(hidden), torch.zeros(hidden)
    q = fused.qkv_to_cache(x, w, b, (g, gb, 1e-5), cache, torch.tensor([29]), q_cols=hidden)
    full = F.linear(F.layer_norm(x, (hidden,), g, gb, 1e-5), w, b).view(3, heads, dim)
    assert torch.allclose(q.view(heads, dim), full[0], atol=1e-5)
    assert torch.allclose(cache[0, :, :, 29], full[1:], atol=1e-5)
    cache[0, :, :, 29] = 0
    assert not cache.any()  # nothing else written: other positions, other slots


@pytest.mark.parametrize("position", [0, 63, 64, 150, 255])
def test_attention_over_chunks_equals_sdpa(fused, position):
    torch.manual_seed(position)
    heads, dim, length = 2, 16, 256
    cache = torch.randn(2, 2, heads, length, dim)
    q = torch.randn(1, heads * dim)
    out = fused.attention(q, cache, torch.tensor([position]))
    k, v = cache[0, 0, :, :position + 1], cache[0, 1, :, :position + 1]
    ref = F.scaled_dot_product_attention(q.view(heads, 1, dim), k, v)[:, 0].reshape(1, -1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_fused_decoding_equals_the_eager_decoder(fused):
    torch.manual_seed(2)
    cfg = dataclasses.replace(PRESETS["tiny"], vocab_size=256)
    state = CodeGeeX(cfg).state_dict()
    eager = Decoder(cfg, state, "cpu", torch.float32, max_slots=2, fused=False)
    fast = Decoder(cfg, state, "cpu", torch.float32, max_slots=2, fused=True)
    prompt = torch.randint(0, 256, (1, 70))  # the cache spans two attention chunks
    for d in (eager, fast):
        d.prefill(prompt, torch.tensor([70]), torch.tensor([0]))
    token, position = torch.tensor([5]), torch.tensor([70])
    for _ in range(3):
        a, b = eager.decode(token, position, 128), fast.decode(token, position, 128)
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
        token, position = a.argmax(-1), position + 1
    assert torch.allclose(eager.kv_cache, fast.kv_cache, atol=1e-5)
    with pytest.raises(ValueError, match="dense weights"):
        Decoder(cfg, state, "cpu", torch.float32, int8=True, fused=True)
