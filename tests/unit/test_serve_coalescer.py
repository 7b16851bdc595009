"""The engine child's output coalescing: first and last outputs at once, the rest merged per interval."""

from codemill.serve.coalescer import OutputCoalescer
from codemill.serve.sequence import RequestOutput, SequenceDelta, TokenLogprob


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def out(rid, text, token, finished=False, reason=None, error=None):
    return RequestOutput(rid, [SequenceDelta(0, text, [token], [TokenLogprob(token, -0.5, [])], reason)],
                         finished, None, None, error)


def test_first_output_at_once_then_merged_per_interval():
    clock = Clock()
    c = OutputCoalescer(0.02, clock)
    c.add(out("a", "x", 1))
    [first] = c.due()
    assert first.deltas[0].text == "x"
    for i, ch in enumerate("yzw"):
        clock.now += 0.005
        c.add(out("a", ch, 2 + i))
        assert c.due() == []  # within the interval: held
    clock.now = 0.02
    [merged] = c.due()
    d = merged.deltas[0]
    assert (d.text, d.token_ids, [lp.token for lp in d.logprobs]) == ("yzw", [2, 3, 4], [2, 3, 4])
    assert not c.holding


def test_final_and_failed_outputs_are_never_held():
    clock = Clock()
    c = OutputCoalescer(10.0, clock)
    c.add(out("a", "x", 1))
    c.add(out("b", "p", 1))
    assert len(c.due()) == 2
    c.add(out("a", "y", 2))
    c.add(out("a", "", 3, finished=True, reason="stop"))
    c.add(out("b", "q", 2))
    c.add(out("b", "", 0, finished=True, error="generation failed: ValueError"))
    ready = {o.request_id: o for o in c.due()}
    assert ready["a"].finished and ready["a"].deltas[0].text == "y" and ready["a"].deltas[0].finish_reason == "stop"
    assert ready["b"].error == "generation failed: ValueError" and ready["b"].deltas[0].text == "q"
    assert not c.holding


def test_requests_are_timed_independently_and_aborts_are_dropped():
    clock = Clock()
    c = OutputCoalescer(0.02, clock)
    c.add(out("a", "x", 1))
    c.due()
    clock.now = 0.015
    c.add(out("b", "p", 1))  # b's first output: at once, whatever a's timing
    c.add(out("a", "y", 2))
    assert [o.request_id for o in c.due()] == ["b"]
    c.forget("a")
    clock.now = 1.0
    assert c.due() == [] and not c.holding


def test_zero_interval_sends_every_output():
    c = OutputCoalescer(0.0, Clock())
    for i in range(3):
        c.add(out("a", str(i), i))
        assert len(c.due()) == 1
