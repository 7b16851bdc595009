"""Which documents are held out, and the order rows are shuffled into: both pure functions of ids and a seed,
so any worker decides them alone and every run decides them the same way."""

from __future__ import annotations

import hashlib

import numpy as np

from codemill.hashing import splitmix64

TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)
VALIDATION_FRACTION = 0.005  # 0.5% of documents, chosen by the hash of their doc_id
_STATS_SAMPLE_SALT = "stats-sample"  # the statistics sample is drawn independently of the split
_CHUNK_SALT = "pack-chunk"           # so are packing chunks (unsalted, validation keys would all be low)

_U64 = np.uint64
_HASH_SPACE = float(2**64)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def split_of(doc_id: str, validation_fraction: float = VALIDATION_FRACTION) -> str:
    """A document's split; independent of the seed, so held-out documents stay held out across runs."""
    return VALIDATION if _hash64(doc_id) / _HASH_SPACE < validation_fraction else TRAIN


def in_stats_sample(doc_id: str, fraction: float) -> bool:
    """Whether a document belongs to the sample that statistics are measured on."""
    return _hash64(f"{_STATS_SAMPLE_SALT}\x00{doc_id}") / _HASH_SPACE < fraction


def chunk_key(doc_id: str) -> int:
    """A document's uint64 key for cutting its stream into packing chunks (`codemill.tokenize.chunks`)."""
    return _hash64(f"{_CHUNK_SALT}\x00{doc_id}")


def shuffle_keys(seed: int, split: str, language: str, n_rows: int, first_row: int = 0) -> np.ndarray:
    """One uint64 key per row of a language's stream, for its rows `first_row ..` (a chunk's); sorting all
    rows by key is the global shuffle."""
    stream = _U64(_hash64(f"{seed}\x00{split}\x00{language}"))
    return splitmix64(np.arange(first_row, first_row + n_rows, dtype=_U64) ^ stream)
