"""codemill.eval.stall: a generation that stops producing is reported and ends with an error, never hangs; and
the stop strings in-process generation is given are checked against its prompts."""

import logging
import time

import pytest

from codemill.eval.stall import Stalled, StallWatch


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_check_raises_only_after_the_bound_and_output_rearms_it():
    clock = Clock()
    watch = StallWatch("gen", lambda: "3 running", stall_s=10, clock=clock)
    clock.t += 9
    watch.check()
    watch.produced(2)
    clock.t += 9
    watch.check()  # 9 s since the last output
    clock.t += 2
    with pytest.raises(Stalled, match=r"gen: no output for 11 s \(bound 10 s\) while work remains: 3 running"):
        watch.check()
    assert watch.outputs == 2


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="stall_s must be positive, got 0"):
        StallWatch("gen", lambda: "", stall_s=0)


def test_the_watching_thread_dumps_every_stack_once_per_silence(caplog, capfd):
    caplog.set_level(logging.INFO, logger="codemill.eval")
    with StallWatch("gen", lambda: "7 running", stall_s=0.2) as watch:
        time.sleep(0.8)
        assert watch.silent_for() > 0.2
    stalls = [r.getMessage() for r in caplog.records if "no output for" in r.getMessage()]
    assert len(stalls) == 1 and stalls[0].endswith("7 running; every thread's stack follows")
    assert "test_the_watching_thread_dumps_every_stack" in capfd.readouterr().err  # this thread's stack


def test_the_thread_ends_with_the_block():
    with StallWatch("gen", lambda: "", stall_s=5) as watch:
        pass
    assert not watch._thread.is_alive()


def test_stop_lists_are_one_for_all_or_one_per_prompt():
    from codemill.eval.generate import stops_for

    assert stops_for(["\n\n"], 2) == [["\n\n"], ["\n\n"]]
    assert stops_for([["a"], ["b"]], 2) == [["a"], ["b"]]
    with pytest.raises(ValueError, match="1 lists of stop strings for 2 prompts: give one list per prompt"):
        stops_for([["a"]], 2)
