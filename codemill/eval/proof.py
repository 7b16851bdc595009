"""A pass is positive evidence, not the absence of a complaint.

Every test run gets a fresh random key on file descriptor 3 (a pipe that can be read once). The harness
around the test reads it only after the last assertion ran and prints `CODEMILL-PASS <count> <mac>`, where
<mac> is HMAC-SHA256(key, "codemill-pass <count>") and <count> how many assertions ran (or 1 where the
harness counts test functions or whole tests). The scorer, outside the sandbox, holds the key: a run passes
only with exit status 0, a line whose MAC verifies, at least one assertion counted, and no assertion failure
anywhere in its output. An early exit, a killed parent, a closed stdout, a replaced assert or a fake marker
therefore fails; why a sample cannot simply read the key first, and what remains possible, is argued in
docs/eval.md ("Proof of a pass").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PROOF_LABEL = "CODEMILL-PASS"
PROOF_LINE = re.compile(rb"CODEMILL-PASS (\d{1,12}) ([0-9a-f]{64})")
KEY_BYTES = 16


def new_key() -> bytes:
    """A fresh key for one run, as the ASCII hex the harnesses read."""
    return secrets.token_hex(KEY_BYTES).encode()


def mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def expected_line(key: bytes, count: int) -> str:
    return f"{PROOF_LABEL} {count} {mac(key, f'codemill-pass {count}'.encode())}"


def verified_count(key: bytes, captured: list[str]) -> int | None:
    """The assertion count of the first line among `captured` (PROOF_LINE matches) that carries a valid MAC
    for `key`; None when there is none."""
    for line in captured:
        m = PROOF_LINE.fullmatch(line.encode())
        if m and hmac.compare_digest(m.group(2).decode(), mac(key, b"codemill-pass " + m.group(1))):
            return int(m.group(1))
    return None
