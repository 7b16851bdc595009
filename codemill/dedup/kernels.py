"""Compiled byte-level primitives shared by the signature and decontamination kernels.

They work on a batch of documents laid out as Arrow lays out a string column: one uint8 buffer of
UTF-8 bytes and an int64 offsets array (document i is data[offsets[i]:offsets[i + 1]]). All arithmetic
is uint32 (explicitly cast after each operation, so it wraps mod 2^32) or int64 (wrapping, with masks
for logical shifts): numba would turn mixed unsigned/signed scalar arithmetic into float.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit, uint32

from codemill.hashing import mix64_kernel

MASK32 = 0xFFFFFFFF
_FNV_OFFSET = 0x4F0B5E1A0C8A7D31  # any fixed odd start value; token hashes only need to be consistent
_FNV_PRIME = 0x100000001B3


def utf8_buffers(strings: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(data, offsets) views of a string column; nulls become empty documents."""
    arr = pc.fill_null(strings, "").cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


@njit(cache=True, inline="always")
def is_token_byte(c):
    # [0-9A-Za-z_] or any byte of a non-ASCII character (see codemill.dedup.shingles)
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95 or c >= 128


@njit(cache=True)
def tokenize(data, start, end, tok_start, tok_end):
    """Token spans of data[start:end] into tok_start/tok_end; returns the number of tokens."""
    n = 0
    i = start
    while i < end:
        if is_token_byte(data[i]):
            j = i + 1
            while j < end and is_token_byte(data[j]):
                j += 1
            tok_start[n] = i
            tok_end[n] = j
            n += 1
            i = j
        else:
            i += 1
    return n


@njit(cache=True)
def join_tokens(data, tok_start, tok_end, first, count, msg):
    """Write tokens first..first+count-1 joined by single spaces into msg; returns the length."""
    length = 0
    for t in range(first, first + count):
        if t > first:
            msg[length] = 32
            length += 1
        for k in range(tok_start[t], tok_end[t]):
            msg[length] = data[k]
            length += 1
    return length


@njit(cache=True, inline="always")
def _rotl32(x, n):
    return uint32((x << uint32(n)) | (x >> uint32(32 - n)))


@njit(cache=True)
def sha1_first_word_le(msg, length, w):
    """The first 4 bytes of SHA-1(msg[:length]) read little-endian, as datasketch's sha1_hash32 reads
    them. msg must have room for the padding (length + 72 bytes); w is a scratch array of 80 uint32."""
    msg[length] = 0x80
    total = ((length + 8) // 64 + 1) * 64
    for i in range(length + 1, total - 8):
        msg[i] = 0
    bits = length * 8
    for i in range(8):
        msg[total - 1 - i] = (bits >> (8 * i)) & 0xFF
    h0, h1, h2 = uint32(0x67452301), uint32(0xEFCDAB89), uint32(0x98BADCFE)
    h3, h4 = uint32(0x10325476), uint32(0xC3D2E1F0)
    for block in range(0, total, 64):
        for i in range(16):
            p = block + 4 * i
            w[i] = ((uint32(msg[p]) << uint32(24)) | (uint32(msg[p + 1]) << uint32(16))
                    | (uint32(msg[p + 2]) << uint32(8)) | uint32(msg[p + 3]))
        for i in range(16, 80):
            w[i] = _rotl32(uint32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]), 1)
        a, b, c, d, e = h0, h1, h2, h3, h4
        # Four loops of 20 rounds instead of one branching loop: each unrolls and pipelines.
        for i in range(20):
            f = uint32((b & c) | (~b & d))
            a, b, c, d, e = uint32(_rotl32(a, 5) + f + e + uint32(0x5A827999) + w[i]), a, _rotl32(b, 30), c, d
        for i in range(20, 40):
            f = uint32(b ^ c ^ d)
            a, b, c, d, e = uint32(_rotl32(a, 5) + f + e + uint32(0x6ED9EBA1) + w[i]), a, _rotl32(b, 30), c, d
        for i in range(40, 60):
            f = uint32((b & c) | (b & d) | (c & d))
            a, b, c, d, e = uint32(_rotl32(a, 5) + f + e + uint32(0x8F1BBCDC) + w[i]), a, _rotl32(b, 30), c, d
        for i in range(60, 80):
            f = uint32(b ^ c ^ d)
            a, b, c, d, e = uint32(_rotl32(a, 5) + f + e + uint32(0xCA62C1D6) + w[i]), a, _rotl32(b, 30), c, d
        h0, h1, h2, h3, h4 = uint32(h0 + a), uint32(h1 + b), uint32(h2 + c), uint32(h3 + d), uint32(h4 + e)
    return uint32(((h0 & 0xFF) << 24) | ((h0 >> 8 & 0xFF) << 16) | ((h0 >> 16 & 0xFF) << 8) | (h0 >> 24))


@njit(cache=True, inline="always")
def fmix32(h):
    """MurmurHash3's 32-bit finalizer, as datasketch's affine32 scheme applies it before permuting."""
    h = uint32(h ^ (h >> uint32(16)))
    h = uint32(h * uint32(0x85EBCA6B))
    h = uint32(h ^ (h >> uint32(13)))
    h = uint32(h * uint32(0xC2B2AE35))
    return uint32(h ^ (h >> uint32(16)))


@njit(cache=True, inline="always")
def mix64(h):
    """codemill.hashing's SplitMix64 finaliser on an int64 (the same bits as uint64)."""
    return np.int64(mix64_kernel(np.uint64(h)))


@njit(cache=True)
def token_hash(data, start, end):
    h = _FNV_OFFSET
    for k in range(start, end):
        h = (h ^ np.int64(data[k])) * _FNV_PRIME
    return h


@njit(cache=True)
def token_buffers(offsets):
    """Token start/end buffers large enough for the longest document of a batch (a token is at least one
    byte), and that length."""
    longest = 0
    for d in range(len(offsets) - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    return np.empty(longest + 1, np.int64), np.empty(longest + 1, np.int64), longest
