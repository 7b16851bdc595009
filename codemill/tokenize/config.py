"""The tokenize stage's configuration; defaults are CodeGeeX's (SPEC §3, §4)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from codemill.config import StrictModel
from codemill.tokenize.chunks import CHUNK_TOKENS
from codemill.tokenize.pack import SEQ_LEN
from codemill.tokenize.shards import SHARD_BYTES
from codemill.tokenize.split import VALIDATION_FRACTION
from codemill.tokenize.tokenizer import N_EXTRA_TOKENS, TOKEN_ID_DTYPE, VOCAB_SIZE

TOKENIZE_BATCH_DOCS = 256         # documents per tokenization batch (one Ray Data block task)
WHITESPACE_SAMPLE_FRACTION = 0.05  # documents also encoded with plain GPT-2 to measure the savings
TRAIN_SAMPLE_DOCUMENTS = 100_000    # documents a new BPE is trained on, at most


class TrainTokenizerConfig(StrictModel):
    """Train a new byte-level BPE on the corpus (keeps CodeGeeX's whitespace and special tokens)."""

    vocab_size: int = Field(VOCAB_SIZE, ge=256 + 2 + N_EXTRA_TOKENS, le=int(np.iinfo(TOKEN_ID_DTYPE).max) + 1,
                            description="all ids, the 144 added tokens included (uint16 ids: at most 65,536)")
    min_frequency: int = Field(2, ge=1, description="a merge must occur this often")
    max_documents: int = Field(TRAIN_SAMPLE_DOCUMENTS, ge=1, description="train-split documents used")


class TokenizerConfig(StrictModel):
    train: TrainTokenizerConfig | None = Field(
        None, description="unset: CodeGeeX's tokenizer (GPT-2 + extra tokens); set: train a new BPE")


class TokenizeConfig(StrictModel):
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    seq_len: int = Field(SEQ_LEN, ge=16, description="ids per row: the model's 2,048 + 1 predicted")
    validation_fraction: float = Field(VALIDATION_FRACTION, ge=0.0, lt=1.0,
                                       description="documents held out, by the hash of their doc_id")
    seed: int = Field(0, ge=0, description="the global shuffle of rows")
    shard_mb: float = Field(SHARD_BYTES / 2**20, gt=0, description="target shard size (MiB)")
    batch_docs: int = Field(TOKENIZE_BATCH_DOCS, ge=1, description="documents per tokenization batch")
    chunk_tokens: int = Field(CHUNK_TOKENS, ge=1, description=(
        "ids per packing chunk, on average (documents join a chunk by the hash of their doc_id): one task "
        "packs one chunk, so this bounds a packing worker's memory (2 bytes per id, a few copies); each chunk "
        "ends in at most one padded row"))
    whitespace_sample_fraction: float = Field(WHITESPACE_SAMPLE_FRACTION, ge=0.0, le=1.0,
                                              description="documents also encoded with plain GPT-2 for stats")

    @property
    def shard_bytes(self) -> int:
        return int(self.shard_mb * 2**20)
