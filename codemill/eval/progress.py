"""Progress of long eval work in the log, every few seconds: done of total, the rate, and the time left."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("codemill.eval")

EVERY_S = 5.0


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """`advance(n)` as work finishes; a line goes to the log at most every `every_s` seconds and at the end."""

    def __init__(self, what: str, total: int, every_s: float = EVERY_S, clock=time.monotonic):
        self.what, self.total, self.every_s, self.clock = what, total, every_s, clock
        self.done = 0
        self.started = self.last = clock()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else None
        share = 100.0 * self.done / self.total if self.total else 100.0
        eta = "ETA " + duration(left) if left is not None and self.done < self.total else "done"
        return (f"{self.what}: {self.done}/{self.total} ({share:.1f}%), {rate:.2f}/s, "
                f"{eta} (elapsed {duration(elapsed)})")

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            log.info("eval: %s", self.line())
