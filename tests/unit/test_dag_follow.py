"""How the runner follows a stage's job: the job's end is read from its status, not from Ray's log stream
(which closes seconds later), and no log line is lost or printed twice on the way."""

from __future__ import annotations

import asyncio
import time

import pytest

from codemill.dag import jobs
from codemill.dag.jobs import JobRunner


class Status:
    def __init__(self, value: str):
        self.value = value


class FakeJobs:
    """A job whose log is `log`; its stream delivers `streamed` of it, then stays open `stream_open_s` (as
    Ray's does after the job ended) or fails; the job is terminal after `terminal_after` status reads."""

    def __init__(self, log: str, streamed: int, *, stream_open_s: float = 30.0, fail_stream: bool = False,
                 terminal_after: int = 2, final: str = "SUCCEEDED"):
        self.log, self.streamed, self.stream_open_s, self.fail_stream = log, streamed, stream_open_s, fail_stream
        self.terminal_after, self.final, self.status_reads, self.log_reads = terminal_after, final, 0, 0

    async def tail_job_logs(self, job_id):
        text = self.log[:self.streamed]
        for i in range(0, len(text), 7):  # chunks that cut lines anywhere
            yield text[i:i + 7]
        if self.fail_stream:
            raise ConnectionError("stream cut")
        await asyncio.sleep(self.stream_open_s)

    def get_job_status(self, job_id):
        self.status_reads += 1
        return Status(self.final if self.status_reads > self.terminal_after else "RUNNING")

    def get_job_logs(self, job_id):
        self.log_reads += 1
        return self.log


def runner(client) -> JobRunner:
    r = JobRunner.__new__(JobRunner)
    r.client = client
    return r


LOG = "".join(f"line {i}: {'x' * (i % 13)}\n" for i in range(40)) + "the last line, without a newline"


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(jobs, "JOB_POLL_S", 0.01)
    monkeypatch.setattr(jobs, "LOG_STREAM_GRACE_S", 0.01)


def printed(capsys) -> list[str]:
    out = capsys.readouterr().out.splitlines()
    assert all(line.startswith("[s] ") for line in out)
    return [line[4:] for line in out]


@pytest.mark.parametrize("streamed", [0, 100, len(LOG) - 5, len(LOG)])
def test_an_ended_job_is_seen_at_once_and_every_line_printed_once(capsys, streamed):
    client = FakeJobs(LOG, streamed)
    started = time.monotonic()
    assert asyncio.run(runner(client)._follow("j", "s")) == "SUCCEEDED"
    assert time.monotonic() - started < 5, "waited for the log stream to close instead of the job's status"
    assert printed(capsys) == LOG.splitlines()


def test_a_failed_stream_loses_no_line_and_the_status_is_still_awaited(capsys):
    client = FakeJobs(LOG, 50, fail_stream=True, terminal_after=5, final="FAILED")
    assert asyncio.run(runner(client)._follow("j", "s")) == "FAILED"
    assert client.status_reads == 6
    assert printed(capsys) == LOG.splitlines()


def test_a_stream_that_ends_with_the_job_is_not_read_again(capsys, monkeypatch):
    monkeypatch.setattr(jobs, "LOG_STREAM_GRACE_S", 5.0)
    client = FakeJobs(LOG, len(LOG), stream_open_s=0.2, terminal_after=0)
    assert asyncio.run(runner(client)._follow("j", "s")) == "SUCCEEDED"
    assert client.log_reads == 0
    assert printed(capsys) == LOG.splitlines()


def test_a_stream_closed_before_the_job_ended_is_completed_from_the_whole_log(capsys):
    client = FakeJobs(LOG, 60, stream_open_s=0.0, terminal_after=20)
    assert asyncio.run(runner(client)._follow("j", "s")) == "SUCCEEDED"
    assert client.log_reads == 1
    assert printed(capsys) == LOG.splitlines()
