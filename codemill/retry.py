"""One retry loop for every call that may fail for a while (a job API that is still starting, a server that
answers 503, a dropped connection): bounded attempts and/or a deadline, exponential backoff with jitter, a
server's `Retry-After` honoured, and a log line per retry naming what is retried and why.

No Ray and no network here: the caller says what counts as transient (`retry_on`, returning a reason or None)
and how long the server asked it to wait (`retry_after` on the exception, or its HTTP headers).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("codemill.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: retry n (from 0) waits between half and all of
    min(max_s, base_s * 2**n), so clients that failed together do not come back together."""

    base_s: float = 1.0
    max_s: float = 60.0

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.base_s * 2 ** retry)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` value in seconds from now: delta-seconds ("120") or an HTTP date ("Wed, 21 Oct 2015
    07:28:00 GMT"); None when absent or unreadable. A date in the past means no wait."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is not trusted
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def header(headers: Mapping[str, str] | Any, name: str) -> str | None:
    """A header by case-insensitive name, from a dict, `http.client.HTTPMessage` or an httpx-style mapping."""
    if headers is None:
        return None
    try:
        items = headers.items()
    except AttributeError:
        return None
    lower = name.lower()
    return next((str(v) for k, v in items if str(k).lower() == lower), None)


def retry_after_of(exc: BaseException, now: float | None = None) -> float | None:
    """How long the failure asked the caller to wait: an exception's own `retry_after` (seconds), else the
    `Retry-After` header of the HTTP response it carries (urllib's HTTPError, httpx/openai's `.response`)."""
    own = getattr(exc, "retry_after", None)
    if isinstance(own, (int, float)):
        return max(0.0, float(own))
    headers = getattr(exc, "headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    return parse_retry_after(header(headers, "Retry-After"), now)


def transient_http_error(exc: BaseException) -> str | None:
    """The reason to retry a urllib HTTP call, or None to fail at once: 429 and 5xx answers, refused or
    dropped connections and timeouts are transient; other 4xx answers are not."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}" if exc.code == 429 or exc.code >= 500 else None
    if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
        reason = getattr(exc, "reason", exc)
        return f"{type(exc).__name__}: {reason}"
    return None


def retry(call: Callable[[], T], *, what: str, retry_on: Callable[[BaseException], str | None],
          attempts: int | None = None, deadline_s: float | None = None, backoff: Backoff = Backoff(),
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
          rng: random.Random | None = None, logger: logging.Logger = log) -> T:
    """`call()`, made again while it raises an error `retry_on` names a reason for, at most `attempts` times
    in all and/or until `deadline_s` seconds have passed; then the last error is raised as it was.

    Each retry waits the backoff's jittered delay, or longer when the error carries a `Retry-After`; a wait
    that would end past the deadline is not started. Errors `retry_on` returns None for are raised at once.
    """
    if attempts is None and deadline_s is None:
        raise ValueError("retry needs a bound: attempts, deadline_s or both")
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts={attempts}: at least one attempt is made")
    rng = rng or random.Random()
    deadline = None if deadline_s is None else clock() + deadline_s
    made = 0
    while True:
        made += 1
        try:
            return call()
        except Exception as exc:
            reason = retry_on(exc)
            if reason is None:
                raise
            wait = backoff.delay(made - 1, rng)
            asked = retry_after_of(exc)
            if asked is not None:
                wait = max(wait, asked)
            out_of_attempts = attempts is not None and made >= attempts
            out_of_time = deadline is not None and clock() + wait > deadline
            if out_of_attempts or out_of_time:
                bound = f"{made} attempts" if out_of_attempts else f"{deadline_s:g} s"
                logger.warning("%s: %s; giving up after %s", what, reason, bound)
                raise
            of = f" of {attempts - 1}" if attempts is not None else ""
            server = f" (Retry-After {asked:g} s)" if asked is not None else ""
            logger.warning("%s: %s; retry %d%s in %.1f s%s", what, _first_line(reason), made, of, wait, server)
            sleep(wait)


def _first_line(text: str, limit: int = 300) -> str:
    return text.splitlines()[0][:limit] if text else text
