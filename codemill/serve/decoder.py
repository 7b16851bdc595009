"""The CodeGeeX forward pass for generation: the weights of `codemill.train.model` rearranged as plain
tensors, with a static KV cache of one slot per running sequence, for every layer including the top query
layer (SPEC §5: its keys/values come from the normalised stack output, its query is the query embedding of
the position). Two entry points:

- `prefill`: prompts of different lengths padded on the right and run together with causal attention (a
  real token never attends to the padding after it); each row's keys/values go into its cache slot.
- `decode`: one new token for slots 0..B-1, each at its own position, attending over its cache up to a
  fixed length bucket with a mask. Fixed shapes, no host synchronisation: `runner.DecodeRunner` captures
  it as CUDA graphs.

The numerics are the training model's: LayerNorm in FP32, attention through `scaled_dot_product_attention`
(FP32 softmax accumulation), tied output embedding. Ray-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from codemill.serve.quant import DenseLinear, Int8Linear, make_linear
from codemill.train.model import FAST_GELU_SLOPE, ModelConfig


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


class _Norm:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float, device: torch.device):
        self.weight, self.bias, self.eps = weight.to(device, torch.float32), bias.to(device, torch.float32), eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.weight.shape, self.weight, self.bias, self.eps).to(x.dtype)

    def nbytes(self) -> int:
        return 2 * self.weight.numel() * 4


class _Layer:
    """One transformer layer's weights (the top query layer has `query` + `kv` instead of `qkv`)."""

    def __init__(self, state: dict, prefix: str, cfg: ModelConfig, dtype, device, int8: bool, top: bool):
        def lin(name: str) -> DenseLinear | Int8Linear:
            weight, bias = state[f"{prefix}.{name}.weight"], state.get(f"{prefix}.{name}.bias")
            return make_linear(weight, bias, dtype, device, int8)

        def norm(name: str) -> _Norm:
            return _Norm(state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"], cfg.layernorm_eps, device)

        self.input_norm, self.post_attention_norm = norm("input_norm"), norm("post_attention_norm")
        if top:
            self.query, self.kv = lin("attention.query"), lin("attention.key_value")
        else:
            self.qkv = lin("attention.qkv")
        self.dense, self.up, self.down = lin("attention.dense"), lin("mlp.up"), lin("mlp.down")

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(self.post_attention_norm(x))
        return x + self.down(h * torch.sigmoid(FAST_GELU_SLOPE * h))

    def nbytes(self) -> int:
        parts = [self.input_norm, self.post_attention_norm, self.dense, self.up, self.down]
        parts += [self.query, self.kv] if hasattr(self, "query") else [self.qkv]
        return sum(p.nbytes() for p in parts)


# Prefill attention without cuDNN's kernel: cuDNN builds an execution plan for every new shape, and every new
# (batch, prompt length) pair is a new shape; the likely cause of the H200 run's TTFT at concurrency 1 of
# 126 ms p50 with varied HumanEval-X prompts against 29 ms with one repeated prompt (not yet re-measured with
# this change). Flash and memory-efficient kernels need no per-shape setup. The decode step has fixed shapes,
# captured once, so it keeps whatever SDPA picks.
PREFILL_ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _pre_attention(x: torch.Tensor, norm_w, norm_b, qkv_w, qkv_b, eps: float, heads: int):
    """Decode step, one block, before attention: LayerNorm (FP32) and the fused q/k/v projection."""
    h = F.layer_norm(x.float(), (x.shape[-1],), norm_w, norm_b, eps).to(x.dtype)
    return F.linear(h, qkv_w, qkv_b).view(x.shape[0], 3, heads, -1)


def _post_attention(x: torch.Tensor, attn: torch.Tensor, dense_w, dense_b, norm_w, norm_b, up_w, up_b, down_w,
                    down_b, eps: float):
    """Decode step, one block, after attention: output projection, residual, LayerNorm, FastGELU MLP."""
    b, h, s, d = attn.shape
    x = x + F.linear(attn.transpose(1, 2).reshape(b, s, h * d), dense_w, dense_b)
    u = F.linear(F.layer_norm(x.float(), (x.shape[-1],), norm_w, norm_b, eps).to(x.dtype), up_w, up_b)
    return x + F.linear(u * torch.sigmoid(FAST_GELU_SLOPE * u), down_w, down_b)


class Decoder:
    def __init__(self, cfg: ModelConfig, state: dict[str, torch.Tensor], device: torch.device | str,
                 dtype: torch.dtype, int8: bool = False, max_slots: int = 8, max_length: int | None = None,
                 compile: bool = False, fused: bool | None = None):
        self.cfg, self.device, self.dtype, self.int8 = cfg, torch.device(device), dtype, int8
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.max_length = min(max_length or cfg.max_seq_length, cfg.max_seq_length)
        dev = self.device
        self.word_embedding = state["word_embedding.weight"].to(dev, dtype).contiguous()
        self.position_embedding = state["position_embedding.weight"].to(dev, dtype)
        self.query_embedding = state["query_embedding.weight"].to(dev, dtype)
        self.blocks = [_Layer(state, f"blocks.{i}", cfg, dtype, dev, int8, top=False)
                       for i in range(cfg.num_layers - 1)]
        self.final_norm = _Norm(state["final_norm.weight"], state["final_norm.bias"], cfg.layernorm_eps, dev)
        self.top = _Layer(state, "top_query", cfg, dtype, dev, int8, top=True)
        self.max_slots = max_slots
        # Keys and values side by side ([layer, slot, k|v, head, position, dim]): a decode step writes both
        # of a layer with one indexed copy, straight from the projection's output.
        shape = (cfg.num_layers, max_slots, 2, cfg.num_heads, self.max_length, cfg.head_dim)
        self.kv_cache = torch.zeros(shape, dtype=dtype, device=dev)
        # Compiled regions (dense weights only): the elementwise work around each block's matmuls fused into a
        # few kernels. The KV-cache writes and attention stay outside, so no compiled graph mutates the cache.
        # The weights are arguments, not constants, so every block shares one graph; dynamic shapes let every
        # batch and length bucket share it too.
        self.compiled = compile and not int8
        self._pre, self._post = _pre_attention, _post_attention
        if self.compiled:
            self._pre = torch.compile(_pre_attention, dynamic=True)
            self._post = torch.compile(_post_attention, dynamic=True)
        # A batch of one decodes through the Triton kernels of fused.py (dense weights; on a GPU by default,
        # where they are the fast path; `fused=True` elsewhere runs them in Triton's interpreter).
        if fused is None:
            fused = self.device.type == "cuda" and not int8 and _triton_available()
        if fused and int8:
            raise ValueError("the fused decode kernels take dense weights; INT8 decodes through the eager path")
        self.fused_rows = 0
        if fused:
            from codemill.serve import fused as fused_kernels

            self._fused = fused_kernels
            self.fused_rows = fused_kernels.ROWS

    # ---------------------------------------------------------------- sizes
    def weight_bytes(self) -> int:
        embeddings = sum(t.numel() * t.element_size()
                         for t in (self.word_embedding, self.position_embedding, self.query_embedding))
        return embeddings + self.final_norm.nbytes() + self.top.nbytes() + sum(b.nbytes() for b in self.blocks)

    def cache_bytes(self) -> int:
        return self.kv_cache.numel() * self.kv_cache.element_size()

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    # ---------------------------------------------------------------- prefill
    def _split_heads(self, t: torch.Tensor, parts: int) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, parts, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def _merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, h, s, d = t.shape
        return t.transpose(1, 2).reshape(b, s, h * d)

    @torch.inference_mode()
    @sdpa_kernel(PREFILL_ATTENTION_BACKENDS)
    def prefill(self, tokens: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor,
                all_logits: bool = False) -> torch.Tensor:
        """tokens [b, s] right-padded, lengths [b], slots [b] (all on the device) -> logits at each row's last
        prompt position [b, vocab], or at every position [b, s, vocab] with `all_logits`."""
        b, s = tokens.shape
        positions = torch.arange(s, device=self.device)
        x = self.word_embedding[tokens] + self.position_embedding[positions]
        for i, layer in enumerate(self.blocks):
            q, k, v = self._split_heads(layer.qkv(layer.input_norm(x)), 3)
            self.kv_cache[i][slots, :, :, :s] = torch.stack((k, v), dim=1)
            x = x + layer.dense(self._merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True)))
            x = layer.mlp(x)
        return self._prefill_head(x, positions, lengths, slots, all_logits)

    def _prefill_head(self, x, positions, lengths, slots, all_logits: bool) -> torch.Tensor:
        top, layer = self.top, len(self.blocks)
        x = self.final_norm(x)
        k, v = self._split_heads(top.kv(top.input_norm(x)), 2)
        self.kv_cache[layer][slots, :, :, :x.shape[1]] = torch.stack((k, v), dim=1)
        if all_logits:
            q = self._split_heads(top.query(self.query_embedding[positions]).expand(x.shape[0], -1, -1), 1)[0]
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # Only the last prompt position's output is needed: its query attends to the whole prompt.
            last = lengths - 1
            x = x[torch.arange(x.shape[0], device=self.device), last][:, None]
            q = self._split_heads(top.query(self.query_embedding[last])[:, None], 1)[0]
            mask = (positions[None, :] <= last[:, None])[:, None, None, :]
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = top.mlp(x + top.dense(self._merge_heads(attn)))
        logits = F.linear(x, self.word_embedding)
        return logits if all_logits else logits[:, 0]

    # ---------------------------------------------------------------- decode
    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, kv_length: int) -> torch.Tensor:
        """One token for each of slots 0..B-1: tokens [B] at positions [B] -> logits [B, vocab]. Attends over
        the first `kv_length` cache positions (a bucket ≥ every position + 1), masking those past each row's."""
        bsz = tokens.shape[0]
        if bsz <= self.fused_rows:
            return self._decode_fused(tokens, positions)
        rows = torch.arange(bsz, device=self.device)
        allowed = (torch.arange(kv_length, device=self.device)[None, :] <= positions[:, None])[:, None, None, :]
        # Additive, in the compute dtype, once per step (a boolean mask is converted inside every attention).
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill_(~allowed, float("-inf"))
        x = (self.word_embedding[tokens] + self.position_embedding[positions])[:, None]
        eps = self.cfg.layernorm_eps
        for i, layer in enumerate(self.blocks):
            if self.compiled:
                n1, n2 = layer.input_norm, layer.post_attention_norm
                qkv = self._pre(x, n1.weight, n1.bias, layer.qkv.weight, layer.qkv.bias, eps, self.heads)
                attn = self._attend_cached(i, rows, positions, qkv[:, 0], qkv[:, 1:], mask, bsz, kv_length,
                                           merge=False)
                x = self._post(x, attn, layer.dense.weight, layer.dense.bias, n2.weight, n2.bias, layer.up.weight,
                               layer.up.bias, layer.down.weight, layer.down.bias, eps)
                continue
            qkv = layer.qkv(layer.input_norm(x)).view(bsz, 3, self.heads, self.head_dim)
            x = x + layer.dense(self._attend_cached(i, rows, positions, qkv[:, 0], qkv[:, 1:], mask, bsz, kv_length))
            x = layer.mlp(x)
        top, i = self.top, len(self.blocks)
        x = self.final_norm(x)
        kv = top.kv(top.input_norm(x)).view(bsz, 2, self.heads, self.head_dim)
        q = top.query(self.query_embedding[positions]).view(bsz, self.heads, self.head_dim)
        x = top.mlp(x + top.dense(self._attend_cached(i, rows, positions, q, kv, mask, bsz, kv_length)))
        return F.linear(x[:, 0], self.word_embedding)

    def _decode_fused(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`decode` through fused.py's kernels: five per layer, attention up to each row's own position (no
        length bucket)."""
        k, eps = self._fused, self.cfg.layernorm_eps
        x = self.word_embedding[tokens] + self.position_embedding[positions]
        for i, layer in enumerate(self.blocks):
            n1 = layer.input_norm
            q = k.qkv_to_cache(x, layer.qkv.weight, layer.qkv.bias, (n1.weight, n1.bias, eps), self.kv_cache[i],
                               positions, q_cols=self.cfg.hidden_size)
            x = k.linear(k.attention(q, self.kv_cache[i], positions), layer.dense.weight, layer.dense.bias,
                         residual=x)
            x = self._fused_mlp(layer, x)
        top, cache = self.top, self.kv_cache[len(self.blocks)]
        x = self.final_norm(x)
        k.qkv_to_cache(x, top.kv.weight, top.kv.bias, (top.input_norm.weight, top.input_norm.bias, eps), cache,
                       positions, q_cols=0)
        q = k.linear(self.query_embedding[positions], top.query.weight, top.query.bias)
        x = k.linear(k.attention(q, cache, positions), top.dense.weight, top.dense.bias, residual=x)
        return k.linear(self._fused_mlp(top, x), self.word_embedding, None)

    def _fused_mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        n2, k = layer.post_attention_norm, self._fused
        u = k.linear(x, layer.up.weight, layer.up.bias, norm=(n2.weight, n2.bias, self.cfg.layernorm_eps), gelu=True)
        return k.linear(u, layer.down.weight, layer.down.bias, residual=x)

    def _attend_cached(self, layer, rows, positions, q, kv, mask, bsz: int, kv_length: int,
                       merge: bool = True) -> torch.Tensor:
        """q [B, heads, dim] and the new kv [B, 2, heads, dim] of slots 0..B-1 -> attention [B, heads, 1, dim]
        (or merged [B, 1, hidden]) over each slot's cache up to its position."""
        cache = self.kv_cache[layer]
        cache[rows, :, :, positions] = kv
        k, v = cache[:bsz, 0, :, :kv_length], cache[:bsz, 1, :, :kv_length]
        out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask)
        return self._merge_heads(out) if merge else out

    # ---------------------------------------------------------------- slots
    @torch.inference_mode()
    def copy_slots(self, src: list[int], dst: list[int], length: int) -> None:
        """Copy the first `length` cache positions of slots `src` into slots `dst` (n samples sharing one
        prefill, a beam taking its parent's history, compaction)."""
        if not src:
            return
        s = torch.tensor(src, device=self.device)
        d = torch.tensor(dst, device=self.device)
        self.kv_cache[:, d, :, :, :length] = self.kv_cache[:, s, :, :, :length]
