"""Is a file's content text, and in which encoding: the rules the crawl applies to every file it reads.

- UTF-16 with a byte-order mark is decoded first, because its text is full of NUL bytes.
- Binary: a NUL byte in the first `SNIFF_BYTES` bytes (git's own test), or more than
  `MAX_CONTROL_RATIO` of those bytes being control characters other than the whitespace and escape
  bytes text uses (Perl's `-B` heuristic, for the rare binary without a NUL near its start).
- UTF-8, its byte-order mark stripped (encoding recorded as "utf-8-sig" then).
- cp1252 (Windows' superset of Latin-1's printable range) when the bytes look like Western text: no run
  of bytes >= 0x80 longer than `MAX_LEGACY_HIGH_BYTE_RUN`. Accented letters in Latin-1 text stand
  alone or in pairs; the double-byte CJK encodings (GBK, Shift-JIS, EUC) put long runs of high bytes
  together and would decode as cp1252 without error but into nonsense, so they are refused ("decode").
  Telling those apart reliably needs a statistical detector; the crawl records them instead of guessing.
"""

from __future__ import annotations

import codecs
import re

SNIFF_BYTES = 8192
MAX_CONTROL_RATIO = 0.30
MAX_LEGACY_HIGH_BYTE_RUN = 2
LEGACY_ENCODING = "cp1252"

REASON_BINARY = "binary"
REASON_DECODE = "decode"

# Control bytes that plain text uses: backspace, tab, newline, vertical tab, form feed, carriage return,
# escape (ANSI colour codes in logs and scripts).
_TEXT_CONTROLS = frozenset(b"\b\t\n\v\f\r\x1b")
_CONTROL_BYTES = bytes(b for b in [*range(0x20), 0x7F] if b not in _TEXT_CONTROLS)
_LONG_HIGH_BYTE_RUN = re.compile(rb"[\x80-\xff]{%d,}" % (MAX_LEGACY_HIGH_BYTE_RUN + 1))


class NotText(ValueError):
    """Content that is not kept as text; `reason` is the skip reason recorded."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def looks_binary(data: bytes) -> bool:
    window = data[:SNIFF_BYTES]
    if b"\x00" in window:
        return True
    if not window:
        return False
    controls = len(window) - len(window.translate(None, _CONTROL_BYTES))
    return controls / len(window) > MAX_CONTROL_RATIO


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) for the bytes of a file; raises `NotText` with the reason otherwise."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise NotText(REASON_DECODE) from None
        if "\x00" in text:  # UTF-32 (whose BOM starts like UTF-16's) or binary behind a BOM
            raise NotText(REASON_DECODE)
        return text, "utf-16"
    if looks_binary(data):
        raise NotText(REASON_BINARY)
    if data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    else:
        encoding = "utf-8"
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError:
        pass
    if _LONG_HIGH_BYTE_RUN.search(data) is None:
        try:
            return data.decode(LEGACY_ENCODING), LEGACY_ENCODING
        except UnicodeDecodeError:  # bytes cp1252 leaves undefined: not Western text
            pass
    raise NotText(REASON_DECODE)
