"""CodeGeeX, the model of the paper (SPEC §5), in one file.

A left-to-right decoder: word + learnable position embeddings, a stack of pre-LayerNorm transformer
blocks, a final LayerNorm, then the *top query layer*, whose attention takes its query from a separate
position-indexed embedding ("what comes at position n+1") and its keys/values from the stack's output.
Logits are that layer's output times the word embedding (tied). LayerNorm runs in FP32; attention runs
through `scaled_dot_product_attention`, whose kernels (flash, memory-efficient, math) accumulate the
softmax in FP32 whatever the input dtype.

Plain PyTorch on one device: parallelism (DeepSpeed ZeRO, Ray Train) is applied from outside, and the
export loads here with neither.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from codemill.train.flops import training_flops_per_token
from codemill.train.model_config import (  # noqa: F401  (re-exported: the model's config lives beside it)
    DROPOUT,
    IGNORE_INDEX,
    INIT_STD,
    LAYERNORM_EPS,
    MAX_SEQ_LENGTH,
    PADDED_VOCAB_SIZE,
    PRESETS,
    VOCAB_MULTIPLE,
    ModelConfig,
    padded_vocab_size,
)

FAST_GELU_SLOPE = 1.702


def fast_gelu(x: torch.Tensor) -> torch.Tensor:
    """CodeGeeX's FastGELU, x / (1 + exp(-1.702·|x|)) · exp(0.851·(x − |x|)), which equals x·σ(1.702·x):
    the sigmoid form is the same function without overflow for large |x|."""
    return x * torch.sigmoid(FAST_GELU_SLOPE * x)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in FP32 whatever the activations' dtype (the paper's numerics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           dropout: float) -> torch.Tensor:
    """Multi-head attention of [b, heads, s, d] tensors; `mask` None means causal (flash kernels),
    else a [b, 1, s, s] boolean mask of allowed positions. Returns [b, s, heads·d]."""
    if mask is None:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    b, h, s, d = out.shape
    return out.transpose(1, 2).reshape(b, s, h * d)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.dropout = cfg.num_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return self.dense(attend(q, k, v, mask, self.dropout if self.training else 0.0))


class TopQueryAttention(nn.Module):
    """Attention whose query comes from the position-indexed query embedding, keys/values from `x`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.dropout = cfg.num_heads, cfg.dropout
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key_value = nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, query_states: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.query(query_states).view(b, s, self.num_heads, -1).transpose(1, 2)
        k, v = self.key_value(x).view(b, s, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return self.dense(attend(q, k, v, mask, self.dropout if self.training else 0.0))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size)
        self.down = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(fast_gelu(self.up(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer layer: x + attn(LN(x)), then + mlp(LN(·))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_norm = FP32LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.attention = SelfAttention(cfg)
        self.post_attention_norm = FP32LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.input_norm(x), mask))
        return x + self.dropout(self.mlp(self.post_attention_norm(x)))


class TopQueryBlock(nn.Module):
    """The last layer: its residual stream starts at the (final-normalised) stack output `x`; the query of
    its attention is the query embedding of each position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_norm = FP32LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.attention = TopQueryAttention(cfg)
        self.post_attention_norm = FP32LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, query_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attention(query_states, self.input_norm(x), mask))
        return x + self.dropout(self.mlp(self.post_attention_norm(x)))


def document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """[b, s] document ids -> [b, 1, s, s] mask: position i may attend to j ≤ i of the same document."""
    s = document_ids.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=document_ids.device).tril()
    same_document = document_ids[:, :, None] == document_ids[:, None, :]
    return (same_document & causal)[:, None]


class CodeGeeX(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.word_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_seq_length, cfg.hidden_size)
        self.query_embedding = nn.Embedding(cfg.max_seq_length, cfg.hidden_size)
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers - 1))
        self.final_norm = FP32LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.top_query = TopQueryBlock(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        output_std = INIT_STD / math.sqrt(2 * self.config.num_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p) if name.endswith("norm.weight") else nn.init.zeros_(p)
            else:
                is_output = name.endswith(("attention.dense.weight", "mlp.down.weight"))
                nn.init.normal_(p, std=output_std if is_output else INIT_STD)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_length: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token at `seq_length` (default: the maximum)."""
        return training_flops_per_token(self.config, seq_length or self.config.max_seq_length)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                document_ids: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        """tokens [b, s] -> logits [b, s, vocab]; with `labels` (IGNORE_INDEX where masked) the loss instead:
        its mean over unmasked positions, or per position ([b, s], 0 where masked) with reduction="none"."""
        b, s = tokens.shape
        if s > self.config.max_seq_length:
            raise ValueError(f"sequence length {s} exceeds max_seq_length {self.config.max_seq_length}")
        positions = torch.arange(s, device=tokens.device)
        mask = None
        if self.config.document_masking and document_ids is not None:
            mask = document_mask(document_ids)
        x = self.embedding_dropout(self.word_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            if self.config.activation_checkpointing and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return self.head(x, self.query_embedding(positions).expand(b, s, -1), mask, labels, reduction)

    def head(self, x: torch.Tensor, query_states: torch.Tensor, mask: torch.Tensor | None,
             labels: torch.Tensor | None, reduction: str) -> torch.Tensor:
        """Final LayerNorm, the top query layer, tied logits and (with labels) the FP32 cross-entropy."""
        b, s, _ = x.shape
        x = self.top_query(self.final_norm(x), query_states, mask)
        logits = F.linear(x, self.word_embedding.weight)
        if labels is None:
            return logits
        losses = F.cross_entropy(logits.float().view(b * s, -1), labels.reshape(b * s),
                                 ignore_index=IGNORE_INDEX, reduction=reduction)
        return losses.view(b, s) if reduction == "none" else losses

    def compile_regions(self) -> None:
        """torch.compile each block and the head, in place (parameter names unchanged). Per region rather
        than the whole model: the blocks share one compiled graph, so compiling takes one block's time; the
        head's region fuses the FP32 upcast into the cross-entropy instead of materialising FP32 logits."""
        for block in self.blocks:
            block.compile()
        self.head = torch.compile(self.head)
