"""Exact-duplicate keys: a hash of minimally normalised content.

The normalisation only removes differences that no reader or compiler sees: line endings (CRLF and CR
become LF), whitespace at the end of each line, and blank lines at the end of the file. Indentation,
blank lines inside the file and everything else stay significant.
"""

from __future__ import annotations

import hashlib

import numpy as np

TRAILING_SPACE = " \t\f\v"
EXACT_KEY_BYTES = 16  # two uint64 words; collisions need ~2^64 documents


def normalize(content: str) -> str:
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip(TRAILING_SPACE) for line in lines).rstrip("\n")


def exact_key(content: str | None) -> bytes:
    """128-bit BLAKE2b of the normalised content (None counts as empty)."""
    return hashlib.blake2b(normalize(content or "").encode("utf-8", "surrogatepass"),
                           digest_size=EXACT_KEY_BYTES).digest()


def exact_keys(contents: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Keys of a batch as two uint64 columns (high, low), ready for a vectorised shuffle."""
    words = np.frombuffer(b"".join(exact_key(c) for c in contents), dtype="<u8").reshape(-1, 2)
    return words[:, 0].copy(), words[:, 1].copy()
