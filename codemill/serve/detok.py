"""Incremental detokenisation and stop strings for one generated sequence.

A byte-level BPE token is a fixed byte string, so where the tokenizer allows it (`token_bytes`) a token costs
one table lookup and an incremental UTF-8 decode, which holds back a character split across tokens until its
last byte arrives. Otherwise a short window of recent tokens is decoded per step; a window whose text ends in
U+FFFD is an unfinished character and waits for the next token. Both keep the per-token cost constant; the
table is what keeps it off the engine's step time at hundreds of rows. While a stop string could still be
forming at the end of the text, that tail is held back from streaming, so a streamed completion never shows
text the final one does not have.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field

from codemill.tokenize.tokenizer import byte_level_alphabet

REPLACEMENT = "\ufffd"
_utf8 = codecs.getincrementaldecoder("utf-8")
_tables: dict[int, tuple[object, list[bytes] | None]] = {}


def token_bytes(tokenizer) -> list[bytes] | None:
    """Every id's bytes, for a `tokenizers` ByteLevel tokenizer whose decoder is ByteLevel then plain string
    replacements (CodeGeeX's whitespace tokens); checked against the tokenizer's own decode of every id. None
    where that does not hold (another decoder): `TextState` then decodes windows. Cached per tokenizer."""
    cached = _tables.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    table = _build_table(tokenizer)
    _tables[id(tokenizer)] = (tokenizer, table)
    return table


def _build_table(tokenizer) -> list[bytes] | None:
    try:
        spec = json.loads(tokenizer.to_str())
    except Exception:
        return None
    decoder = spec.get("decoder") or {}
    steps = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    if not steps or steps[0].get("type") != "ByteLevel":
        return None
    replace = {}
    for step in steps[1:]:
        if step.get("type") != "Replace" or "String" not in step.get("pattern", {}):
            return None
        replace[step["pattern"]["String"]] = step["content"]
    added = {t["id"] for t in spec.get("added_tokens", [])}
    inverse = byte_level_alphabet()
    size = tokenizer.get_vocab_size()
    table: list[bytes] = []
    for i in range(size):
        piece = tokenizer.id_to_token(i)
        if piece is None:
            table.append(b"")
        elif i in added:
            table.append(replace.get(piece, piece).encode())
        elif all(c in inverse for c in piece):
            table.append(bytes(inverse[c] for c in piece))
        else:
            return None
    # The tokenizer's own word for every id whose bytes are whole characters.
    decoded = tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    for b, text in zip(table, decoded):
        whole = b.decode("utf-8", errors="replace")
        if REPLACEMENT not in whole and whole != text:
            return None
    return table


@dataclass
class TextState:
    tokenizer: object | None
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0          # characters of `text` already handed out
    stopped: bool = False     # a stop string was found; `text` ends before it
    _prefix: int = 0
    _read: int = 0
    table: list[bytes] | None = None  # token_bytes(tokenizer): one lookup per token instead of window decodes
    _hold: int = 0            # characters a stop string could still be forming in: longest stop - 1
    _bytes: object = None     # the incremental UTF-8 decoder (table mode)

    def __post_init__(self) -> None:
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        if self.table is not None:
            self._bytes = _utf8(errors="replace")

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False) if ids else ""

    def append(self, token: int) -> None:
        self.ids.append(token)
        if self.tokenizer is None or self.stopped:
            return
        if self._bytes is not None:
            piece = self._bytes.decode(self.table[token]) if token < len(self.table) else REPLACEMENT
            if piece:
                self._add(piece)
            return
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self._add(after[len(before):])
            self._prefix, self._read = self._read, len(self.ids)

    def flush(self) -> None:
        """At the end: whatever the window still holds, unfinished character or not."""
        if self.tokenizer is None or self.stopped:
            return
        if self._bytes is not None:
            piece = self._bytes.decode(b"", final=True)
            if piece:
                self._add(piece)
            return
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) > len(before):
            self._add(after[len(before):])
        self._prefix = self._read = len(self.ids)

    def _add(self, delta: str) -> None:
        start = max(0, len(self.text) - self._hold)
        self.text += delta
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            self.stopped = True

    def take(self, final: bool) -> str:
        """The text not yet handed out; before the end, less the tail a stop string could still start in."""
        hold = 0 if final or self.stopped else self._hold
        end = max(self.emitted, len(self.text) - hold)
        delta, self.emitted = self.text[self.emitted:end], end
        return delta
