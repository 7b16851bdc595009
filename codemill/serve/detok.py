"""Incremental detokenisation and stop strings for one generated sequence.

Decoding only a short window of recent tokens per step keeps the per-token cost constant; a window whose
text ends in U+FFFD is an unfinished UTF-8 character (byte-level BPE splits characters across tokens) and
waits for the next token. While a stop string could still be forming at the end of the text, that tail is
held back from streaming, so a streamed completion never shows text the final one does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REPLACEMENT = "\ufffd"


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
    _hold: int = 0            # characters a stop string could still be forming in: longest stop - 1

    def __post_init__(self) -> None:
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False) if ids else ""

    def append(self, token: int) -> None:
        self.ids.append(token)
        if self.tokenizer is None or self.stopped:
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
