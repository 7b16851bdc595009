"""GitHub's rate limits as plain logic: the shared budget of every token, what a response means, backoff.

Nothing here touches the network or knows a token's secret: tokens are numbered (0, 1, ...), and a
`RateLimiter` only counts calls per (token, resource). It never blocks; `acquire` answers which token to
use or how long to wait. Its methods take and return plain values, so one instance can serve a whole
cluster from inside an actor (`ray.remote(RateLimiter)`), shared by every task that calls the API.

GitHub counts calls per token and per resource: "core" (5,000 an hour) and "search" (30 a minute) are
separate budgets. Responses carry `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch seconds) and
`X-RateLimit-Resource`; secondary limits answer 403 or 429, with `Retry-After` when GitHub says how long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from codemill.retry import header, parse_retry_after

CORE = "core"
SEARCH = "search"

# GitHub: "If you receive a secondary rate limit error without retry-after, wait for at least one minute".
SECONDARY_LIMIT_WAIT_S = 60.0
# Reset times come from GitHub's clock; waiting a little past them absorbs clock skew between hosts.
RESET_MARGIN_S = 1.0


@dataclass(frozen=True)
class RateHeaders:
    """The primary-limit headers of one response."""

    resource: str | None
    remaining: int
    reset_at: float  # epoch seconds


def parse_rate_headers(headers: Mapping[str, str]) -> RateHeaders | None:
    """`X-RateLimit-*` headers of a response, or None when it carries none (or unreadable ones)."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        remaining = int(lower["x-ratelimit-remaining"])
        reset_at = float(lower["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    return RateHeaders(lower.get("x-ratelimit-resource"), remaining, reset_at)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """`Retry-After` in seconds (GitHub sends seconds; an HTTP date is read too), or None."""
    return parse_retry_after(header(headers, "Retry-After"), now)


@dataclass(frozen=True)
class Grant:
    """The answer to `acquire`: use `token` now (wait_s == 0), or ask again after `wait_s` seconds."""

    token: int
    wait_s: float = 0.0


class Limiter(Protocol):
    """What a client needs from a limiter: a `RateLimiter`, or a proxy to one hosted in an actor."""

    def acquire(self, resource: str) -> Grant: ...

    def update(self, token: int, resource: str, headers: RateHeaders | None) -> None: ...

    def block(self, token: int, resource: str, seconds: float) -> None: ...


@dataclass
class _Budget:
    remaining: int | None = None     # None: not known yet, or a new window began
    reset_at: float | None = None
    blocked_until: float = 0.0       # set by secondary limits


class RateLimiter:
    """The budgets of `token_count` tokens; picks the token with the most calls left."""

    def __init__(self, token_count: int, clock: Callable[[], float] = time.time):
        if token_count < 1:
            raise ValueError("a rate limiter needs at least one token slot (anonymous access counts as one)")
        self.token_count = token_count
        self._clock = clock
        self._budgets: dict[tuple[int, str], _Budget] = {}
        self._lock = threading.Lock()

    def _budget(self, token: int, resource: str) -> _Budget:
        if not 0 <= token < self.token_count:
            raise ValueError(f"token #{token} does not exist; this limiter counts {self.token_count} token(s)")
        return self._budgets.setdefault((token, resource), _Budget())

    def _wait(self, budget: _Budget, now: float) -> float:
        if budget.reset_at is not None and now >= budget.reset_at:
            budget.remaining, budget.reset_at = None, None
        wait = budget.blocked_until - now
        if budget.remaining == 0 and budget.reset_at is not None:
            wait = max(wait, budget.reset_at + RESET_MARGIN_S - now)
        return max(0.0, wait)

    def acquire(self, resource: str) -> Grant:
        """Reserve one call on `resource`: the token to use, or how long until some token has budget."""
        with self._lock:
            now = self._clock()
            ready: list[tuple[float, int]] = []
            soonest = Grant(0, float("inf"))
            for token in range(self.token_count):
                budget = self._budget(token, resource)
                wait = self._wait(budget, now)
                if wait == 0:
                    left = float("inf") if budget.remaining is None else budget.remaining
                    ready.append((-left, token))
                elif wait < soonest.wait_s:
                    soonest = Grant(token, wait)
            if not ready:
                return soonest
            token = min(ready)[1]
            budget = self._budget(token, resource)
            if budget.remaining is not None:
                budget.remaining -= 1
            return Grant(token)

    def update(self, token: int, resource: str, headers: RateHeaders | None) -> None:
        """Record what a response said about `token`'s budget."""
        if headers is None:
            return
        with self._lock:
            budget = self._budget(token, headers.resource or resource)
            same_window = budget.reset_at == headers.reset_at and budget.remaining is not None
            # Within one window, responses of concurrent calls arrive out of order: keep the lowest count.
            budget.remaining = min(budget.remaining, headers.remaining) if same_window else headers.remaining
            budget.reset_at = headers.reset_at

    def block(self, token: int, resource: str, seconds: float) -> None:
        """A secondary limit: `token` may not call `resource` for `seconds`."""
        with self._lock:
            budget = self._budget(token, resource)
            budget.blocked_until = max(budget.blocked_until, self._clock() + seconds)


Action = Literal["ok", "rate_limited", "retry", "fail"]


@dataclass(frozen=True)
class Verdict:
    """What to do about one response: `wait_s` is how long the token must rest (rate limits) or the
    least time before a retry (5xx with `Retry-After`)."""

    action: Action
    wait_s: float = 0.0


def classify_response(status: int, headers: Mapping[str, str], message: str, now: float) -> Verdict:
    """GitHub's documented meaning of a status and its headers."""
    if status < 400:
        return Verdict("ok")
    retry_after = retry_after_seconds(headers, now)
    if status in (403, 429):
        if retry_after is not None:
            return Verdict("rate_limited", retry_after)
        rate = parse_rate_headers(headers)
        if rate is not None and rate.remaining == 0:
            return Verdict("rate_limited", max(0.0, rate.reset_at + RESET_MARGIN_S - now))
        if status == 429 or "rate limit" in message.lower():
            return Verdict("rate_limited", SECONDARY_LIMIT_WAIT_S)
        return Verdict("fail")
    if status >= 500:
        return Verdict("retry", retry_after or 0.0)
    return Verdict("fail")
