"""MinHash signatures of a whole batch of documents in one compiled call, equal to datasketch's.

datasketch 2.x (`MinHash(num_perm, seed)`, default scheme "affine32") hashes each shingle with
`sha1_hash32` (the first 4 bytes of SHA-1, little-endian), mixes it with MurmurHash3's 32-bit
finalizer, and keeps, for each permutation p, min((a[p] * h + b[p]) mod 2^32), with odd a[p] and b[p]
drawn from `numpy.random.RandomState(seed)`. This module draws the same a and b and computes the same
values, but tokenises, shingles, hashes and permutes a batch of documents inside one numba kernel, with
no Python object per shingle.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

from codemill.dedup.kernels import (
    MASK32,
    fmix32,
    join_tokens,
    sha1_first_word_le,
    token_buffers,
    tokenize,
    utf8_buffers,
)

EMPTY_VALUE = np.uint32(MASK32)  # datasketch's initial hash value: a document without shingles keeps it


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The affine32 permutation parameters (a, b) of datasketch.MinHash(num_perm, seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


@njit(cache=True)
def _sign_batch(data, offsets, size, a, b, out, positions):
    n_docs = len(offsets) - 1
    tok_start, tok_end, longest = token_buffers(offsets)
    msg = np.empty(longest + 128, np.uint8)
    w = np.empty(80, np.uint32)
    n_perm = len(a)
    current = np.empty(n_perm, np.uint32)
    for d in range(n_docs):
        n_tokens = tokenize(data, offsets[d], offsets[d + 1], tok_start, tok_end)
        current[:] = MASK32
        width = min(size, n_tokens)
        n_shingles = n_tokens - width + 1 if n_tokens > 0 else 0
        for i in range(n_shingles):
            length = join_tokens(data, tok_start, tok_end, i, width, msg)
            h = fmix32(sha1_first_word_le(msg, length, w))
            for p in range(n_perm):  # uint32 wrap-around is the mod 2^32; this loop vectorises
                current[p] = min(current[p], np.uint32(a[p] * h + b[p]))
        for p in range(n_perm):
            out[d, p] = current[p]
        positions[d] = n_shingles


def signatures(contents: pa.Array | pa.ChunkedArray, shingle_size: int, a: np.ndarray,
               b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signatures uint32 [n_docs, num_perm], shingle positions per document). A document with no
    shingle (no code token) gets the empty signature and 0 positions."""
    data, offsets = utf8_buffers(contents)
    n_docs = len(offsets) - 1
    out = np.empty((n_docs, len(a)), dtype=np.uint32)
    positions = np.zeros(n_docs, dtype=np.int64)
    _sign_batch(data, offsets, shingle_size, a.astype(np.uint32), b.astype(np.uint32), out, positions)
    return out, positions


def estimated_jaccard(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Row-wise fraction of permutations on which two signature arrays agree (datasketch's `jaccard`)."""
    return np.count_nonzero(left == right, axis=-1) / left.shape[-1]
