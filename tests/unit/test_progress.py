"""Progress lines of long work: tasks done of total, rate and ETA, at most one line every `every_s`, and a final
line only for work that reported along the way."""

from __future__ import annotations

from codemill.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_every_few_seconds_with_rate_and_eta():
    clock = Clock()
    progress = Progress("dedup sketch_file", 40, every_s=5.0, clock=clock)
    clock.now += 2
    assert progress.update(3) is None  # not yet 5 s since the start
    clock.now += 3
    assert progress.update(10) == "dedup sketch_file: 10 of 40 tasks (25%), 2.00 tasks/s, ETA 15 s"
    clock.now += 1
    assert progress.update(12) is None
    clock.now += 4
    assert progress.update(20) == "dedup sketch_file: 20 of 40 tasks (50%), 2.00 tasks/s, ETA 10 s"
    clock.now += 10
    assert progress.update(40) == "dedup sketch_file: 40 of 40 tasks (100%), 2.00 tasks/s, done in 20 s"


def test_short_work_logs_nothing_and_stalled_work_says_so():
    clock = Clock()
    quick = Progress("dedup resolve", 3, clock=clock)
    clock.now += 1
    assert quick.update(3) is None
    stalled = Progress("dedup verify", 8, every_s=5.0, clock=clock)
    clock.now += 6
    assert stalled.update(0) == "dedup verify: 0 of 8 tasks (0%), 0.00 tasks/s, ETA unknown"


def test_durations_read_naturally():
    assert [duration(s) for s in (4, 89, 600, 7200)] == ["4 s", "89 s", "10 min", "2.0 h"]
