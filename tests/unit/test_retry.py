"""codemill.retry: bounded attempts and deadlines, jittered exponential backoff, Retry-After (seconds and HTTP
dates), a log line per retry, and errors that are not transient raised at once."""

from __future__ import annotations

import email.message
import email.utils
import logging
import random
import urllib.error

import pytest

from codemill.retry import Backoff, parse_retry_after, retry, retry_after_of, transient_http_error

NOW = 1_700_000_000.0


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky(Exception):
    def __init__(self, message: str = "503 from the server", retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def failing(times: int, error: Exception | None = None, result: str = "ok"):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise error or Flaky()
        return result
    return call, calls


def flaky_reason(exc: BaseException) -> str | None:
    return str(exc) if isinstance(exc, Flaky) else None


def run(call, clock: FakeClock, **kwargs):
    return retry(call, what="GET /thing", retry_on=flaky_reason, sleep=clock.sleep, clock=clock.time,
                 rng=random.Random(3), **kwargs)


def test_backoff_is_jittered_exponential_and_bounded():
    backoff, rng = Backoff(base_s=1.0, max_s=8.0), random.Random(1)
    for retry_number, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        delays = [backoff.delay(retry_number, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(set(delays)) > 1


def test_transient_failures_are_retried_with_backoff_and_a_log_line_each(caplog):
    clock = FakeClock()
    call, calls = failing(2)
    with caplog.at_level(logging.WARNING, logger="codemill.retry"):
        assert run(call, clock, attempts=5, backoff=Backoff(1.0, 60.0)) == "ok"
    assert len(calls) == 3
    assert 0.5 <= clock.sleeps[0] <= 1 and 1 <= clock.sleeps[1] <= 2
    lines = [r.getMessage() for r in caplog.records if r.name == "codemill.retry"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /thing: 503 from the server; retry 1 of 4 in ")
    assert lines[1].startswith("GET /thing: 503 from the server; retry 2 of 4 in ")


def test_attempts_bound_the_calls_and_the_last_error_is_raised(caplog):
    clock = FakeClock()
    call, calls = failing(100)
    with caplog.at_level(logging.WARNING, logger="codemill.retry"), pytest.raises(Flaky, match="503"):
        run(call, clock, attempts=3)
    assert len(calls) == 3 and len(clock.sleeps) == 2
    assert [r for r in caplog.records if r.name == "codemill.retry"][-1].getMessage() == "GET /thing: 503 from the server; giving up after 3 attempts"


def test_a_deadline_bounds_the_time_and_no_wait_runs_past_it():
    clock = FakeClock()
    call, calls = failing(100)
    with pytest.raises(Flaky):
        run(call, clock, deadline_s=10.0, backoff=Backoff(1.0, 4.0))
    assert clock.now <= 10.0 and len(calls) >= 3
    assert sum(clock.sleeps) == clock.now


def test_errors_that_are_not_transient_are_raised_at_once():
    clock = FakeClock()
    call, calls = failing(1, error=ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        run(call, clock, attempts=5)
    assert len(calls) == 1 and clock.sleeps == []


def test_retry_after_on_the_error_is_honoured_when_longer_than_the_backoff(caplog):
    clock = FakeClock()
    call, _ = failing(1, error=Flaky(retry_after=42.0))
    with caplog.at_level(logging.WARNING, logger="codemill.retry"):
        run(call, clock, attempts=2, backoff=Backoff(1.0, 2.0))
    assert clock.sleeps == [42.0]
    assert "(Retry-After 42 s)" in [r for r in caplog.records if r.name == "codemill.retry"][0].getMessage()
    # Shorter than the backoff: the backoff's wait stands.
    clock = FakeClock()
    call, _ = failing(1, error=Flaky(retry_after=0.0))
    run(call, clock, attempts=2, backoff=Backoff(8.0, 8.0))
    assert 4.0 <= clock.sleeps[0] <= 8.0


def test_a_retry_after_beyond_the_deadline_gives_up_instead_of_sleeping():
    clock = FakeClock()
    call, calls = failing(1, error=Flaky(retry_after=600.0))
    with pytest.raises(Flaky):
        run(call, clock, deadline_s=60.0)
    assert len(calls) == 1 and clock.sleeps == []


def test_retry_after_in_seconds_and_as_an_http_date():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 7 ", NOW) == 7.0
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(NOW - 30, usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_retry_after_is_read_from_an_http_errors_headers():
    headers = email.message.Message()
    headers["Retry-After"] = "9"
    error = urllib.error.HTTPError("http://x/v1/completions", 503, "busy", headers, None)
    assert retry_after_of(error) == 9.0

    class Response:  # httpx / openai: the response travels on the exception
        headers = {"retry-after": email.utils.formatdate(NOW + 5, usegmt=True)}

    class ApiStatusError(Exception):
        response = Response()

    assert retry_after_of(ApiStatusError(), NOW) == pytest.approx(5.0)
    assert retry_after_of(ValueError("no headers")) is None


def test_transient_http_errors_are_429_5xx_and_connection_failures():
    def http_error(code: int) -> urllib.error.HTTPError:
        return urllib.error.HTTPError("http://x", code, "", email.message.Message(), None)

    assert transient_http_error(http_error(503)) == "HTTP 503"
    assert transient_http_error(http_error(429)) == "HTTP 429"
    assert transient_http_error(http_error(404)) is None
    assert transient_http_error(http_error(400)) is None
    assert "Connection refused" in transient_http_error(urllib.error.URLError("Connection refused"))
    assert transient_http_error(ConnectionResetError("reset")) == "ConnectionResetError: reset"
    assert transient_http_error(TimeoutError("timed out")) is not None
    assert transient_http_error(ValueError("x")) is None


def test_a_retry_without_any_bound_is_refused():
    with pytest.raises(ValueError, match="needs a bound"):
        retry(lambda: 1, what="x", retry_on=flaky_reason)
    with pytest.raises(ValueError, match="at least one attempt"):
        retry(lambda: 1, what="x", retry_on=flaky_reason, attempts=0)
