"""Progress of long work in log lines: tasks done of total, rate and ETA, at most one line every `every_s`.

Ray-free: the caller says how many are done (after a `ray.wait`, a batch, a file) and logs what comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

PROGRESS_EVERY_S = 5.0


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.2 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Progress:
    what: str   # "dedup sketch_file"
    total: int
    unit: str = "tasks"
    every_s: float = PROGRESS_EVERY_S
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    _last_line: float = field(init=False)
    _reported: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.started = self._last_line = self.clock()

    def line(self, done: int) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        text = f"{self.what}: {done} of {self.total} {self.unit}"
        if self.total:
            text += f" ({100 * done / self.total:.0f}%)"
        text += f", {rate:.2f} {self.unit}/s" if rate < 10 else f", {rate:.0f} {self.unit}/s"
        if done < self.total:
            text += f", ETA {duration((self.total - done) / rate)}" if done else ", ETA unknown"
        else:
            text += f", done in {duration(elapsed)}"
        return text

    def update(self, done: int) -> str | None:
        """A line to log, when `every_s` has passed since the last one; and the final line, if any was logged
        before (work that ends within `every_s` logs nothing)."""
        now = self.clock()
        if done >= self.total:
            return self.line(done) if self._reported else None
        if now - self._last_line < self.every_s:
            return None
        self._last_line, self._reported = now, True
        return self.line(done)
