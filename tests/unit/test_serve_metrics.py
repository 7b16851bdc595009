"""The serve metrics (Ray's metric objects, no cluster) record every request the API answers, including a prompt
scored with max_tokens 0, which generates nothing: Ray's Counter.inc refuses 0 and failed that request."""

from __future__ import annotations

from codemill.serve.engine import RequestMetrics, StepStats
from codemill.serve.metrics import ReplicaMetrics, RouterMetrics, add


class Tally:
    def __init__(self):
        self.calls = []

    def inc(self, value, tags):
        if value <= 0:  # as ray.util.metrics.Counter does
            raise ValueError(f"value must be >0, got {value}")
        self.calls.append((value, tags))


def test_zero_amounts_add_nothing():
    tally = Tally()
    add(tally, 0, {"model": "a"})
    add(tally, 3, {"model": "a"})
    assert tally.calls == [(3, {"model": "a"})]


def test_a_request_that_generated_nothing_is_recorded():
    replica = ReplicaMetrics("a")
    scored = RequestMetrics(arrival=1.0, admitted=1.1, first_token=1.2, finished=1.3, prompt_tokens=14,
                            completion_tokens=0)
    replica.on_finished(scored)
    replica.on_finished(RequestMetrics(arrival=1.0, prompt_tokens=0))  # failed before admission
    replica.on_step(StepStats(batch_size=0, prefill_tokens=0, seconds=0.0, tokens=0))
    RouterMetrics().record("a", 200, 0.5, None)
