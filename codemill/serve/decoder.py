"""The CodeGeeX forward pass for generation over a paged KV cache: the weights of `codemill.train.model` as
plain tensors, and one `forward` for any mix of decode rows and prefill chunks.

A batch is flat: T tokens, the first `num_decode` of them one per decoding sequence, then the chunks of
prompts being prefilled. Every token's keys/values are written to its cache slot (block * block_size +
offset) in every layer, including the top query layer (SPEC §5: its keys/values come from the normalised
stack output, its query is the query embedding of the position). Decode rows attend through
attention.DECODE_ATTENTION (Triton flash-decoding over pages, or SDPA over gathered pages); prefill chunks
through SDPA over their sequence's pages. A batch of one decode row on a GPU runs through fused.py's
kernels. Logits are computed only for the rows asked for.

The numerics are the training model's: LayerNorm in FP32, softmax in FP32, tied output embedding. Ray-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from codemill.serve.attention import DECODE_ATTENTION, prefill_attention, triton_usable, write_kv
from codemill.serve.quant import DenseLinear, Int8Linear, make_linear
from codemill.serve.transfer import to_device
from codemill.train.model import FAST_GELU_SLOPE, ModelConfig

# Prefill attention without cuDNN's kernel: cuDNN builds an execution plan for every new shape, and every
# prompt chunk is a new shape. Flash and memory-efficient kernels need no per-shape setup.
PREFILL_ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class PrefillChunk:
    """Tokens [flat_start, flat_start + length) of a batch are positions [start, start + length) of one
    sequence, whose first blocks (device tensor) hold positions 0 .. start + length - 1."""

    flat_start: int
    length: int
    start: int
    blocks: torch.Tensor


@dataclass
class ForwardBatch:
    input_ids: torch.Tensor       # [T] long
    positions: torch.Tensor       # [T] long
    slots: torch.Tensor           # [T] long: where each token's keys/values go
    num_decode: int               # the first num_decode tokens are decode rows
    block_tables: torch.Tensor    # [num_decode, width] int32
    context_lens: torch.Tensor    # [num_decode] int32: positions each decode row attends to (its own included)
    prefills: list[PrefillChunk]
    logit_rows: torch.Tensor | None = None  # [R] long: the tokens whose logits are wanted; None: all


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


def _pre_attention(x: torch.Tensor, norm_w, norm_b, qkv_w, qkv_b, eps: float):
    """One block before attention: LayerNorm (FP32) and the fused q/k/v projection (compiled region)."""
    h = F.layer_norm(x.float(), (x.shape[-1],), norm_w, norm_b, eps).to(x.dtype)
    return F.linear(h, qkv_w, qkv_b)


def _post_attention(x: torch.Tensor, attn: torch.Tensor, dense_w, dense_b, norm_w, norm_b, up_w, up_b, down_w,
                    down_b, eps: float):
    """One block after attention: output projection, residual, LayerNorm, FastGELU MLP (compiled region)."""
    x = x + F.linear(attn, dense_w, dense_b)
    u = F.linear(F.layer_norm(x.float(), (x.shape[-1],), norm_w, norm_b, eps).to(x.dtype), up_w, up_b)
    return x + F.linear(u * torch.sigmoid(FAST_GELU_SLOPE * u), down_w, down_b)


class Decoder:
    def __init__(self, cfg: ModelConfig, state: dict[str, torch.Tensor], device: torch.device | str,
                 dtype: torch.dtype, int8: bool = False, max_length: int | None = None, compile: bool = False,
                 fused: bool | None = None, attention: str = "auto"):
        self.cfg, self.device, self.dtype, self.int8 = cfg, torch.device(device), dtype, int8
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.max_length = min(max_length or cfg.max_seq_length, cfg.max_seq_length)
        if attention == "auto":
            attention = "triton" if self.device.type == "cuda" and triton_usable(self.device) else "sdpa"
        if attention not in DECODE_ATTENTION:
            raise ValueError(f"attention must be auto or one of {sorted(DECODE_ATTENTION)}, got {attention!r}")
        if attention == "triton" and not triton_usable(self.device):
            raise ValueError("attention: triton needs a GPU (or Triton's interpreter, TRITON_INTERPRET=1)")
        self.attention = attention
        dev = self.device
        self.word_embedding = state["word_embedding.weight"].to(dev, dtype).contiguous()
        self.position_embedding = state["position_embedding.weight"].to(dev, dtype)
        self.query_embedding = state["query_embedding.weight"].to(dev, dtype)
        self.blocks = [_Layer(state, f"blocks.{i}", cfg, dtype, dev, int8, top=False)
                       for i in range(cfg.num_layers - 1)]
        self.final_norm = _Norm(state["final_norm.weight"], state["final_norm.bias"], cfg.layernorm_eps, dev)
        self.top = _Layer(state, "top_query", cfg, dtype, dev, int8, top=True)
        self.kv_cache: torch.Tensor | None = None  # [layers, blocks, 2, heads, block_size, dim]: allocate_cache
        # Compiled regions (dense weights): the elementwise work around each block's matmuls fused into a few
        # kernels; the cache writes and attention stay outside, so no compiled graph mutates the cache.
        self.compiled = compile and not int8
        self._pre, self._post = _pre_attention, _post_attention
        if self.compiled:
            self._pre = torch.compile(_pre_attention, dynamic=True)
            self._post = torch.compile(_post_attention, dynamic=True)
        # A batch of one decode row runs through fused.py's kernels (on a GPU by default, where they are the
        # fast path; `fused=True` elsewhere runs them in Triton's interpreter).
        if fused is None:
            fused = self.device.type == "cuda" and triton_usable(self.device) and attention == "triton"
        self.fused = None
        if fused:
            from codemill.serve import fused as fused_kernels

            self.fused = fused_kernels

    # ---------------------------------------------------------------- sizes
    def weight_bytes(self) -> int:
        embeddings = sum(t.numel() * t.element_size()
                         for t in (self.word_embedding, self.position_embedding, self.query_embedding))
        return embeddings + self.final_norm.nbytes() + self.top.nbytes() + sum(b.nbytes() for b in self.blocks)

    def bytes_per_block(self, block_size: int) -> int:
        """KV-cache bytes one block of `block_size` positions takes over all layers."""
        return self.cfg.num_layers * 2 * self.heads * block_size * self.head_dim * torch.finfo(self.dtype).bits // 8

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        shape = (self.cfg.num_layers, num_blocks, 2, self.heads, block_size, self.head_dim)
        self.kv_cache = None
        self.kv_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)

    def cache_bytes(self) -> int:
        return 0 if self.kv_cache is None else self.kv_cache.numel() * self.kv_cache.element_size()

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    # ---------------------------------------------------------------- the forward pass
    @torch.inference_mode()
    @sdpa_kernel(PREFILL_ATTENTION_BACKENDS)
    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        """-> logits [R, vocab] of batch.logit_rows (all tokens when None), in the compute dtype."""
        if self.fused is not None and batch.num_decode == 1 and not batch.prefills:
            x = self._decode_fused(batch)
        else:
            x = self._forward_eager(batch)
        if batch.logit_rows is not None:
            x = x[batch.logit_rows]
        return F.linear(x, self.word_embedding)

    def _forward_eager(self, batch: ForwardBatch) -> torch.Tensor:
        t = batch.input_ids.shape[0]
        hidden, eps = self.cfg.hidden_size, self.cfg.layernorm_eps
        x = self.word_embedding[batch.input_ids] + self.position_embedding[batch.positions]
        for i, layer in enumerate(self.blocks):
            if self.compiled:
                n1, n2 = layer.input_norm, layer.post_attention_norm
                qkv = self._pre(x, n1.weight, n1.bias, layer.qkv.weight, layer.qkv.bias, eps)
                qkv = qkv.view(t, 3, self.heads, self.head_dim)
                attn = self._attend(i, qkv[:, 0], qkv[:, 1:], batch).reshape(t, hidden)
                x = self._post(x, attn, layer.dense.weight, layer.dense.bias, n2.weight, n2.bias, layer.up.weight,
                               layer.up.bias, layer.down.weight, layer.down.bias, eps)
                continue
            qkv = layer.qkv(layer.input_norm(x)).view(t, 3, self.heads, self.head_dim)
            x = x + layer.dense(self._attend(i, qkv[:, 0], qkv[:, 1:], batch).reshape(t, hidden))
            x = layer.mlp(x)
        top = self.top
        x = self.final_norm(x)
        kv = top.kv(top.input_norm(x)).view(t, 2, self.heads, self.head_dim)
        q = top.query(self.query_embedding[batch.positions]).view(t, self.heads, self.head_dim)
        attn = self._attend(len(self.blocks), q, kv, batch).reshape(t, hidden)
        return top.mlp(x + top.dense(attn))

    def _attend(self, layer: int, q: torch.Tensor, kv: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """q [T, heads, dim] and the new keys/values [T, 2, heads, dim] -> attention output [T, heads, dim]."""
        cache = self.kv_cache[layer]
        write_kv(cache, batch.slots, kv)
        d = batch.num_decode
        if not batch.prefills:
            return DECODE_ATTENTION[self.attention](q, cache, batch.block_tables, batch.context_lens)
        out = torch.empty_like(q)
        if d:
            out[:d] = DECODE_ATTENTION[self.attention](q[:d], cache, batch.block_tables, batch.context_lens)
        for c in batch.prefills:
            rows = slice(c.flat_start, c.flat_start + c.length)
            out[rows] = prefill_attention(q[rows].transpose(0, 1), cache, c.blocks, c.start).transpose(0, 1)
        return out

    def _decode_fused(self, batch: ForwardBatch) -> torch.Tensor:
        """One decode row through fused.py's kernels: five per layer (LayerNorm + q/k/v projection writing
        k/v into the cache, attention over the row's pages, output projection + residual, LayerNorm + up +
        GELU, down + residual)."""
        k, eps, cols = self.fused, self.cfg.layernorm_eps, self.cfg.hidden_size
        tables, lens, slots = batch.block_tables, batch.context_lens, batch.slots
        attend = DECODE_ATTENTION[self.attention]
        x = self.word_embedding[batch.input_ids] + self.position_embedding[batch.positions]
        for i, layer in enumerate(self.blocks):
            n1 = layer.input_norm
            q = k.qkv_to_cache(x, layer.qkv, (n1.weight, n1.bias, eps), self.kv_cache[i], slots, q_cols=cols)
            a = attend(q.view(1, self.heads, self.head_dim), self.kv_cache[i], tables, lens).view(1, cols)
            x = k.linear(a, layer.dense, residual=x)
            x = self._fused_mlp(layer, x)
        top, cache = self.top, self.kv_cache[len(self.blocks)]
        x = self.final_norm(x)
        k.qkv_to_cache(x, top.kv, (top.input_norm.weight, top.input_norm.bias, eps), cache, slots, q_cols=0)
        q = k.linear(self.query_embedding[batch.positions], top.query)
        a = attend(q.view(1, self.heads, self.head_dim), cache, tables, lens).view(1, cols)
        x = k.linear(a, top.dense, residual=x)
        return self._fused_mlp(top, x)

    def _fused_mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        n2, k = layer.post_attention_norm, self.fused
        u = k.linear(x, layer.up, norm=(n2.weight, n2.bias, self.cfg.layernorm_eps), gelu=True)
        return k.linear(u, layer.down, residual=x)

    @torch.inference_mode()
    def copy_blocks(self, src: list[int], dst: list[int]) -> None:
        """Copy whole cache blocks (copy-on-write of a block shared by samples or beams)."""
        if src:
            s = to_device(src, torch.long, self.device)
            self.kv_cache[:, to_device(dst, torch.long, self.device)] = self.kv_cache[:, s]
