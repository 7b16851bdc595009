"""The CodeGeeX model's shape (SPEC §5) and its presets, without torch: configs validate on any install."""

from __future__ import annotations

from dataclasses import asdict, dataclass

PADDED_VOCAB_SIZE = 52_224  # CodeGeeX's embedding rows: its 50,400 tokens padded (SPEC §3)
VOCAB_MULTIPLE = 128        # row count multiple that suits tensor parallelism and tensor cores
MAX_SEQ_LENGTH = 2_048
DROPOUT = 0.1
LAYERNORM_EPS = 1e-5
INIT_STD = 0.02             # normal init of every weight; output projections also scale by 1/sqrt(2·layers)
IGNORE_INDEX = -100         # label of a position whose loss is masked (padding past a stream's end)


@dataclass(frozen=True)
class ModelConfig:
    num_layers: int          # transformer layers including the top query layer (CodeGeeX-13B: 39 + 1)
    hidden_size: int
    num_heads: int
    ffn_hidden_size: int
    vocab_size: int = PADDED_VOCAB_SIZE
    max_seq_length: int = MAX_SEQ_LENGTH
    dropout: float = DROPOUT  # after the embeddings, on attention probabilities, after each sublayer
    layernorm_eps: float = LAYERNORM_EPS
    document_masking: bool = False          # attend only within a document (needs document ids)
    activation_checkpointing: bool = False  # recompute each block in backward instead of storing it

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers}: at least the top query layer is needed")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        if self.vocab_size % VOCAB_MULTIPLE:
            raise ValueError(f"vocab_size={self.vocab_size} is not a multiple of {VOCAB_MULTIPLE}; "
                             f"use padded_vocab_size(n_tokens)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def padded_vocab_size(n_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-n_tokens // multiple) * multiple


def _preset(num_layers: int, hidden: int, heads: int) -> ModelConfig:
    return ModelConfig(num_layers=num_layers, hidden_size=hidden, num_heads=heads, ffn_hidden_size=4 * hidden)


# Smaller presets keep CodeGeeX's shape (FFN = 4 × hidden, top query layer counted in num_layers) at the
# depths and widths of the GPT-3 family; `13b` is the paper's model.
PRESETS: dict[str, ModelConfig] = {
    "tiny": _preset(2, 64, 4),
    "125m": _preset(12, 768, 12),
    "350m": _preset(24, 1024, 16),
    "1.3b": _preset(24, 2048, 16),
    "2.7b": _preset(32, 2560, 32),
    "6.7b": _preset(32, 4096, 32),
    "13b": _preset(40, 5120, 40),
}
