"""Per request, the engine's outputs held and merged for up to a stream interval before they leave the engine
process.

Every output that crosses to the replica costs it a wake-up, a queue hop, a Serve stream item and JSON, per
request per step: at hundreds of streams that Python work, not the GPU, bounds the tokens per second. Merged
here, a request costs at most one message per interval whatever the step rate. A request's first output
(time to first token) and its last (or an error) are never held. Pure Python, no Ray, no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from codemill.serve.sequence import RequestOutput, merge_outputs


class OutputCoalescer:
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s, self.clock = interval_s, clock
        self._held: dict[str, list[RequestOutput]] = {}
        self._sent: dict[str, float] = {}   # when each running request's last output left

    def add(self, out: RequestOutput) -> None:
        self._held.setdefault(out.request_id, []).append(out)

    def forget(self, request_id: str) -> None:
        """An aborted request: nothing of it is sent any more."""
        self._held.pop(request_id, None)
        self._sent.pop(request_id, None)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def due(self) -> list[RequestOutput]:
        """The outputs to send now, one merged output per request: first, final, or `interval_s` after the
        request's last one."""
        if not self._held:
            return []
        now, ready = self.clock(), []
        for rid in list(self._held):
            outs = self._held[rid]
            last = self._sent.get(rid)
            final = outs[-1].finished or outs[-1].error is not None
            if last is None or final or now - last >= self.interval_s:
                ready.append(merge_outputs(outs))
                del self._held[rid]
                if final:
                    self._sent.pop(rid, None)
                else:
                    self._sent[rid] = now
        return ready
