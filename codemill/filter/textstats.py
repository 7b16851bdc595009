"""Per-document text measurements of a whole Arrow string array at once, from its UTF-8 bytes.

An Arrow string array is one contiguous UTF-8 buffer plus row offsets, so every count the filter needs is a
few numpy passes over that buffer, with no Python per document:

- bytes: UTF-8 bytes of the document.
- chars: Unicode code points (bytes that are not UTF-8 continuation bytes), as Python's `len(str)`.
- lines: the text split on "\\n"; a final "\\n" ends the last line and does not start a new one, so
  "a\\nb\\n" and "a\\nb" both have 2 lines, "a\\n\\n" has 2 (the second empty) and "" has 0.
  Only "\\n" separates lines: "\\r" (as in "\\r\\n") is an ordinary character of its line.
- line_chars: characters that are not "\\n" (chars - newlines); longest_line: the most characters on one line.
- letters: characters for which Python's `str.isalpha()` is true, so Unicode letters (Unicode categories
  Lu, Ll, Lt, Lm, Lo) count, e.g. the letters of a comment in Chinese or Greek, not only [A-Za-z].

Arrow guarantees valid UTF-8 in string arrays, which is what makes byte-level decoding safe here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NEWLINE = 0x0A


@dataclass
class TextStats:
    """Counts per document (numpy int64 arrays of equal length)."""

    bytes: np.ndarray
    chars: np.ndarray
    newlines: np.ndarray
    lines: np.ndarray
    longest_line: np.ndarray
    letters: np.ndarray

    @property
    def line_chars(self) -> np.ndarray:
        return self.chars - self.newlines


def _is_alpha(code_points: np.ndarray) -> np.ndarray:
    """`str.isalpha()` of each code point, asked once per distinct one (a batch holds few)."""
    distinct, inverse = np.unique(code_points, return_inverse=True)
    answers = np.fromiter((c < 0x110000 and chr(c).isalpha() for c in distinct.tolist()), dtype=bool,
                          count=len(distinct))
    return answers[inverse]


def _utf8_buffer(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The data bytes and the row offsets (int64, starting at 0) of a string array without nulls."""
    if pa.types.is_string(array.type):
        array = array.cast(pa.large_string())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]:offsets[-1]]
    return data, offsets - offsets[0]


def _rows_of(positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How many of the sorted byte `positions` lie before each bound."""
    return np.searchsorted(positions, bounds, side="left")


def _per_row_sum(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of a dense 0/1 byte mask over each row's byte range."""
    starts = offsets[:-1]
    # reduceat needs every index inside the array and gives a[i] for an empty range: pad, then zero those.
    padded = np.concatenate([mask, np.zeros(1, mask.dtype)])
    sums = np.add.reduceat(padded, starts, dtype=np.int64)
    sums[starts == offsets[1:]] = 0
    return sums


def _decode_leads(data: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """Code points of the multi-byte UTF-8 sequences that start at `leads`."""
    padded = np.concatenate([data, np.zeros(3, np.uint8)])
    b0, b1, b2, b3 = (padded[leads + k].astype(np.int32) for k in range(4))
    two = ((b0 & 0x1F) << 6) | (b1 & 0x3F)
    three = ((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F)
    four = ((b0 & 0x07) << 18) | ((b1 & 0x3F) << 12) | ((b2 & 0x3F) << 6) | (b3 & 0x3F)
    return np.where(b0 < 0xE0, two, np.where(b0 < 0xF0, three, four))


def measure(array: pa.Array | pa.ChunkedArray) -> TextStats:
    """Measure every document of a string array (nulls count as empty documents)."""
    if isinstance(array, pa.ChunkedArray):
        parts = [measure(chunk) for chunk in array.chunks]
        if not parts:
            return measure(pa.array([], pa.large_string()))
        return TextStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in TextStats.__dataclass_fields__))
    if array.null_count:
        array = pc.fill_null(array, "")
    data, offsets = _utf8_buffer(array)
    starts, ends = offsets[:-1], offsets[1:]
    n_bytes = ends - starts

    continuation = np.flatnonzero((data & 0xC0) == 0x80)
    newline_at = np.flatnonzero(data == NEWLINE)

    def char_index(byte_positions: np.ndarray) -> np.ndarray:
        return byte_positions - _rows_of(continuation, byte_positions)

    chars = char_index(ends) - char_index(starts)
    first_nl, end_nl = _rows_of(newline_at, starts), _rows_of(newline_at, ends)
    newlines = end_nl - first_nl
    nonempty = n_bytes > 0
    last_byte = data[np.maximum(ends - 1, 0)] if len(data) else np.zeros(len(ends), np.uint8)
    unterminated = nonempty & (last_byte != NEWLINE)
    lines = newlines + unterminated

    # Each "\n" ends a line that began after the previous "\n" or at its row's start, whichever is later.
    row_of_nl = np.searchsorted(ends, newline_at, side="right")
    after_prev_nl = np.concatenate([[0], newline_at[:-1] + 1])
    line_start = np.maximum(after_prev_nl, starts[row_of_nl]) if len(newline_at) else newline_at
    terminated_len = char_index(newline_at) - char_index(line_start)
    longest = np.zeros(len(starts), dtype=np.int64)
    has_nl = newlines > 0
    if has_nl.any():
        longest[has_nl] = np.maximum.reduceat(terminated_len, first_nl[has_nl])
    # The last line, after the row's last "\n" (empty when the row ends with one).
    last_start = np.where(has_nl, newline_at[np.maximum(end_nl - 1, 0)] + 1 if len(newline_at) else 0, starts)
    longest = np.maximum(longest, char_index(ends) - char_index(last_start))

    ascii_letter = ((data | 0x20) - ord("a")) < 26  # uint8 wrap-around keeps only a-z / A-Z
    letters = _per_row_sum(ascii_letter.view(np.uint8), offsets)
    leads = np.flatnonzero(data >= 0xC0)
    if len(leads):
        alpha_leads = leads[_is_alpha(_decode_leads(data, leads))]
        letters += _rows_of(alpha_leads, ends) - _rows_of(alpha_leads, starts)

    return TextStats(bytes=n_bytes.astype(np.int64), chars=chars.astype(np.int64), newlines=newlines.astype(np.int64),
                     lines=lines.astype(np.int64), longest_line=longest, letters=letters)
