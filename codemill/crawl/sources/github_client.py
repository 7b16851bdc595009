"""Calls to GitHub's REST API: tokens, the shared rate limiter, bounded retries, redirects, downloads.

Standard library only (urllib). Every API call first asks the rate limiter for a token with budget left,
then reports the response's rate-limit headers back to it. Redirects are followed by hand, so that the
`Authorization` header goes only to the API's own origin: a tarball redirect points at a signed URL on
another host (codeload), which must not see the token.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

from codemill.crawl.sources.ratelimit import Limiter, classify_response, parse_rate_headers
from codemill.retry import Backoff, retry

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "codemill-crawler"
JSON_MEDIA_TYPE = "application/vnd.github+json"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 20
ERROR_BODY_BYTES = 64 << 10
# A search page of 100 repositories is about 0.5 MB of JSON; anything far larger is not GitHub's answer.
MAX_JSON_BYTES = 32 << 20
MAX_TEXT_BYTES = 64 << 10  # the bare-SHA answer is 40 or 64 characters

T = TypeVar("T")


class ApiError(RuntimeError):
    """A call that failed for good: a 4xx GitHub meant, or transient failures beyond the retry budget."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class DownloadTooLarge(ApiError):
    pass


class _Transient(Exception):
    """A failure worth retrying after a backoff (5xx, a dropped connection, a cut-short body); `retry_after`:
    the least wait the server asked for (a 5xx's Retry-After), which `codemill.retry` honours."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def _transient_reason(exc: BaseException) -> str | None:
    return str(exc) if isinstance(exc, _Transient) else None


class _RateLimited(Exception):
    """The token was told to wait; the limiter knows for how long, so the call only has to be made again."""


class Tokens:
    """API tokens read from the environment. Only their count is ever shown; logs name them by index."""

    def __init__(self, secrets: Iterable[str]):
        self._secrets = tuple(dict.fromkeys(s for s in secrets if s))

    @classmethod
    def from_env(cls, names: Iterable[str]) -> Tokens:
        """Each variable holds one token or several, comma-separated; duplicates count once."""
        found: list[str] = []
        for name in names:
            found.extend(part.strip() for part in os.environ.get(name, "").split(","))
        return cls(found)

    def __len__(self) -> int:
        return len(self._secrets)

    @property
    def slot_count(self) -> int:
        """Budgets to track: one per token, or one for anonymous access."""
        return max(1, len(self._secrets))

    def authorization(self, index: int) -> str | None:
        """The header value for token #index; None for anonymous access."""
        if index >= self.slot_count:
            raise ApiError(f"the rate limiter handed out token #{index}, but this process's environment holds "
                           f"{len(self._secrets)} token(s): give every worker the same token variables")
        return f"Bearer {self._secrets[index]}" if self._secrets else None

    def label(self, index: int) -> str:
        return f"token #{index}" if self._secrets else "anonymous access"

    def __repr__(self) -> str:
        return f"Tokens({len(self._secrets)} token(s))"

    def __reduce__(self):
        # Pickles end up in object stores, spill files and logs: a secret must never travel that way.
        raise TypeError("Tokens are read from each process's environment and are never serialised")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # surfaces the 3xx as a response, so the next hop is made without credentials


def _error_message(body: bytes) -> str:
    try:
        message = json.loads(body).get("message")
        if message:
            return str(message)
    except (ValueError, AttributeError):
        pass
    return body[:200].decode("utf-8", "replace").strip()


class GithubClient:
    def __init__(self, api_url: str, tokens: Tokens, limiter: Limiter, *, timeout_s: float, max_retries: int,
                 backoff: Backoff, max_rate_limit_waits: int, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.api_url = api_url.rstrip("/")
        self.tokens = tokens
        self.limiter = limiter
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_rate_limit_waits = max_rate_limit_waits
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"GithubClient({self.api_url!r}, {self.tokens!r})"

    # -- public calls -------------------------------------------------------------------------------------

    def get_json(self, path: str, params: dict[str, Any] | None = None, resource: str = "core") -> Any:
        query = f"?{urlencode(params)}" if params else ""

        def parse(response) -> Any:
            body = _read_bounded(response, MAX_JSON_BYTES, f"GET {path}")
            try:
                return json.loads(body)
            except ValueError as exc:
                raise _Transient(f"the response is not JSON ({exc})") from None

        return self._request(f"{self.api_url}{path}{query}", f"GET {path}{query}", resource,
                             JSON_MEDIA_TYPE, parse)

    def get_text(self, path: str, accept: str, resource: str = "core") -> str:
        what = f"GET {path}"
        return self._request(f"{self.api_url}{path}", what, resource, accept,
                             lambda response: _read_bounded(response, MAX_TEXT_BYTES, what).decode("utf-8", "replace"))

    def download(self, path: str, dest: str, max_bytes: int, resource: str = "core") -> int:
        """Stream `path` (following its redirect) to `dest`; returns the bytes written. The file appears
        whole or not at all; beyond `max_bytes` the download stops with `DownloadTooLarge`."""
        what = f"GET {path}"
        return self._request(f"{self.api_url}{path}", what, resource, JSON_MEDIA_TYPE,
                             lambda response: _stream_to_file(response, dest, max_bytes, what))

    # -- the retry loop -----------------------------------------------------------------------------------

    def _request(self, url: str, what: str, resource: str, accept: str, consume: Callable[[Any], T]) -> T:
        """Transient failures are retried (backoff, or the server's Retry-After); a rate-limited token is not
        a failure: the limiter has recorded how long it rests, and the call is made again (through
        `_acquire`, which waits for budget), up to `max_rate_limit_waits` times."""
        rate_limited = 0
        while True:
            try:
                return retry(lambda: self._attempt(url, what, resource, accept, consume), what=what,
                             retry_on=_transient_reason, attempts=self.max_retries + 1, backoff=self.backoff,
                             sleep=self.sleep, rng=self.rng, logger=log)
            except _Transient as transient:
                raise ApiError(f"{what}: gave up after {self.max_retries + 1} attempts; last failure: {transient}"
                               ) from None
            except _RateLimited:
                rate_limited += 1
                if rate_limited > self.max_rate_limit_waits:
                    raise ApiError(f"{what}: still rate limited after {self.max_rate_limit_waits} waits") from None

    def _acquire(self, resource: str) -> int:
        while True:
            grant = self.limiter.acquire(resource)
            if grant.wait_s <= 0:
                return grant.token
            log.info("%s budget of all %d token slot(s) spent; waiting %.0f s (%s is free first)",
                     resource, self.tokens.slot_count, grant.wait_s, self.tokens.label(grant.token))
            self.sleep(grant.wait_s)

    def _headers(self, accept: str, token: int | None) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": USER_AGENT, "X-GitHub-Api-Version": API_VERSION}
        authorization = None if token is None else self.tokens.authorization(token)
        return dict(headers, Authorization=authorization) if authorization else headers

    def _attempt(self, url: str, what: str, resource: str, accept: str, consume: Callable[[Any], T]) -> T:
        token: int | None = self._acquire(resource)
        hops = 0
        while True:
            response = self._open(url, self._headers(accept, token))
            if token is not None:
                self.limiter.update(token, resource, parse_rate_headers(response.headers))
            self._check(response, what, token, resource)
            if response.status not in REDIRECT_STATUSES:
                break
            location = response.headers.get("Location")
            response.close()
            if not location or hops == MAX_REDIRECTS:
                raise ApiError(f"{what}: HTTP {response.status}: no Location, or more than {MAX_REDIRECTS} "
                               "redirects", response.status)
            hops += 1
            url = urljoin(url, location)
            if not _may_follow(url, self.api_url):
                raise ApiError(f"{what}: HTTP {response.status} to a {urlsplit(url).scheme}: URL, which is not "
                               "followed (https only, or http when the API itself is http)", response.status)
            # A moved repository redirects within the API; a tarball, to another host (codeload), which
            # gets a signed URL and never the token.
            if _origin(url) != _origin(self.api_url):
                token = None
        try:
            return consume(response)
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"connection lost while reading the response ({type(exc).__name__}: {exc})") from None
        finally:
            response.close()

    def _open(self, url: str, headers: dict[str, str]):
        request = urllib.request.Request(url, headers=headers)
        try:
            return self._opener.open(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as err:
            return err  # an HTTP answer (3xx/4xx/5xx) with status, headers and body
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Transient(f"network error ({type(exc).__name__}: {reason})") from None

    def _check(self, response, what: str, token: int | None, resource: str) -> None:
        if response.status < 400:
            return
        try:
            message = _error_message(response.read(ERROR_BODY_BYTES))
        except (OSError, http.client.HTTPException):
            message = ""
        finally:
            response.close()
        verdict = classify_response(response.status, response.headers, message, self.clock())
        if verdict.action == "rate_limited" and token is not None:
            log.warning("%s: %s is rate limited on %s (HTTP %d); resting it %.0f s",
                        what, self.tokens.label(token), resource, response.status, verdict.wait_s)
            self.limiter.block(token, resource, verdict.wait_s)
            raise _RateLimited()
        if verdict.action in ("retry", "rate_limited"):
            raise _Transient(f"HTTP {response.status} {message}".strip(), verdict.wait_s or None)
        raise ApiError(f"{what}: HTTP {response.status}: {message}", response.status)


def _may_follow(url: str, api_url: str) -> bool:
    """Redirects go to https only (http too when the API is configured as http, as a test server is):
    never file://, ftp:// or a downgrade to plain http, which urllib would all happily open."""
    scheme = urlsplit(url).scheme.lower()
    return scheme == "https" or (scheme == "http" and urlsplit(api_url).scheme.lower() == "http")


def _read_bounded(response, max_bytes: int, what: str) -> bytes:
    body = response.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise ApiError(f"{what}: the response is larger than {max_bytes} bytes")
    return body


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _stream_to_file(response, dest: str, max_bytes: int, what: str) -> int:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise DownloadTooLarge(f"{what}: {int(declared)} bytes is over the cap of {max_bytes} bytes")
    partial = f"{dest}.part"
    written = 0
    try:
        with open(partial, "wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise DownloadTooLarge(f"{what}: more than the cap of {max_bytes} bytes")
                out.write(chunk)
        if declared is not None and declared.isdigit() and written != int(declared):
            raise _Transient(f"the body ended after {written} of {declared} bytes")
        os.replace(partial, dest)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return written
