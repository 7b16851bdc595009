"""Code tokens and shingles: the reference (pure Python) definition.

A code token is a maximal run of identifier characters: ASCII letters, digits, underscore, and any
non-ASCII character (most languages accept Unicode identifiers). Everything else (operators,
punctuation, whitespace) separates tokens. A shingle is `size` consecutive tokens joined by one space,
as UTF-8 bytes. A document with fewer than `size` tokens (but at least one) has one shingle, all its
tokens; a document without tokens has none and takes part in exact deduplication only.

`codemill.dedup.minhash` computes the same shingles inside its compiled kernel, over UTF-8 bytes, where
the rule reads: a token byte is [0-9A-Za-z_] or >= 0x80. Tests check that both agree.
"""

from __future__ import annotations

import re

TOKEN_PATTERN = re.compile(r"[0-9A-Za-z_\u0080-\U0010FFFF]+")


def code_tokens(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text)


def shingles(text: str, size: int) -> set[bytes]:
    tokens = code_tokens(text)
    if not tokens:
        return set()
    if len(tokens) < size:
        return {" ".join(tokens).encode()}
    return {" ".join(tokens[i:i + size]).encode() for i in range(len(tokens) - size + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
