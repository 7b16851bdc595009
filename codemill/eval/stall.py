"""A bound on how long in-process generation may go without producing anything.

The engine loop of `EngineGenerator` runs until every request has finished. Should it stop producing (a
scheduling livelock, a device that never answers), it would wait forever and say nothing. `StallWatch` turns
that into a report: every thread's stack once output stops for `stall_s` (a loop blocked inside the device's
synchronisation can be seen, though not interrupted, from another thread), and an error from `check` for the
loop that is still stepping without output. Progress itself is the caller's to log (codemill.eval.progress).
"""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("codemill.eval")

# No output token for this long while requests are running is a stall: far above a step of any preset on a GPU,
# and above a 2,048-token prefill step of the 1.3b preset on a CPU core.
DEFAULT_STALL_S = 300.0


class Stalled(RuntimeError):
    """No output for longer than the stall bound while work remained."""


class StallWatch:
    """Call `produced(n)` as outputs arrive and `check()` between steps; `state()` describes the work in flight
    (for the reports). Use as a context manager: the watching thread lives only inside it."""

    def __init__(self, what: str, state: Callable[[], str], stall_s: float = DEFAULT_STALL_S,
                 clock: Callable[[], float] = time.monotonic):
        if stall_s <= 0:
            raise ValueError(f"stall_s must be positive, got {stall_s}")
        self.what, self.state, self.stall_s, self.clock = what, state, stall_s, clock
        self.last_output = clock()
        self.outputs = 0
        self._dumped = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def produced(self, n: int = 1) -> None:
        self.outputs += n
        self.last_output = self.clock()
        self._dumped = False

    def silent_for(self) -> float:
        return self.clock() - self.last_output

    def check(self) -> None:
        """Raise `Stalled` once nothing has come out for `stall_s` (called by the loop that steps)."""
        silent = self.silent_for()
        if silent > self.stall_s:
            raise Stalled(f"{self.what}: no output for {silent:.0f} s (bound {self.stall_s:.0f} s) while work "
                          f"remains: {self.state()}")

    def _watch(self) -> None:
        while not self._stop.wait(self.stall_s / 4):
            now = self.clock()
            if not self._dumped and now - self.last_output > self.stall_s:
                self._dumped = True  # once per silence: a new output re-arms it
                log.error("%s: no output for %.0f s; %s; every thread's stack follows", self.what,
                          now - self.last_output, self.state())
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)

    def __enter__(self) -> StallWatch:
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
