"""The build-lock handling around DeepSpeed's JIT ops: a lock file nobody holds is removed with a log line, one a
live process holds is waited for up to a bound and then named in the error, and the node lock is an flock
that a second holder waits on with a bound."""

from __future__ import annotations

import logging
import os

import pytest

from codemill.train.extensions import OpBuildTimeout, clear_stale_lock, lock_holders, node_lock


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_holders_of_a_lock_file_are_the_processes_that_have_it_open(tmp_path):
    lock = tmp_path / "lock"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL)  # what torch's FileBaton does
    try:
        assert lock_holders(lock) == [os.getpid()]
    finally:
        os.close(fd)
    assert lock_holders(lock) == []


def test_a_lock_left_by_a_dead_process_is_removed_with_a_log_line(tmp_path, caplog):
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    os.close(os.open(lock, os.O_CREAT | os.O_EXCL))  # created, then its holder went away without removing it
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="codemill.train"):
        assert clear_stale_lock(lock, wait_s=60, clock=clock.time, sleep=clock.sleep) is True
    assert not lock.exists()
    assert f"removed the stale build lock {lock}" in caplog.text
    assert clock.now < 1  # looked twice, waited for nothing


def test_no_lock_means_nothing_to_do(tmp_path):
    assert clear_stale_lock(tmp_path / "lock", wait_s=60) is False


def test_a_lock_a_live_process_holds_is_waited_for_then_named_in_the_error(tmp_path):
    lock = tmp_path / "lock"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL)
    clock = FakeClock()
    try:
        with pytest.raises(OpBuildTimeout, match=rf"the build lock {lock} is still held by pid\(s\) \[{os.getpid()}\] "
                                                 r"after 6 s"):
            clear_stale_lock(lock, wait_s=6, clock=clock.time, sleep=clock.sleep)
    finally:
        os.close(fd)
    assert lock.exists() and 6 <= clock.now <= 8  # waited out the bound, and left a live holder's file alone


def test_a_lock_released_while_waiting_ends_the_wait(tmp_path):
    lock = tmp_path / "lock"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL)
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 5 and lock.exists():  # the holder finishes its build: FileBaton.release
            os.close(fd)
            os.remove(lock)

    assert clear_stale_lock(lock, wait_s=60, clock=clock.time, sleep=sleep) is False
    assert 5 <= clock.now < 8


def test_the_node_lock_is_exclusive_and_a_second_holder_waits_with_a_bound(tmp_path):
    path = tmp_path / ".deepspeed_shm_comm.codemill-lock"
    clock = FakeClock()
    with node_lock(path):
        with pytest.raises(OpBuildTimeout, match=rf"another process on this node held {path} for over 3 s"):
            with node_lock(path, wait_s=3, clock=clock.time, sleep=clock.sleep):
                pass
    with node_lock(path, wait_s=0):  # free again once its holder let go
        pass
