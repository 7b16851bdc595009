"""The `github` source: every repository GitHub's search finds for the configured languages, fetched as the
tarball of its default branch's current commit.

Search answers at most 1,000 results per query. `list_repos` therefore cuts the query space into slices,
by creation time (down to one day), then stars, then size, then time within the day, until each slice
holds at most 1,000 repositories, and pages through every slice. Slices never overlap, but a repository
can move between them while the crawl runs (it gains a star), so results are deduplicated by name.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, StrictFloat, StrictInt, field_validator, model_validator

from codemill.config import StrictModel
from codemill.crawl.sources.base import FetchedRepo, FetchError, RepoRef
from codemill.crawl.sources.github_client import ApiError, GithubClient, Tokens
from codemill.crawl.sources.ratelimit import CORE, SEARCH, Limiter, RateLimiter
from codemill.languages import normalize_language
from codemill.retry import Backoff

log = logging.getLogger(__name__)

GITHUB_API_URL = "https://api.github.com"
# SPEC §1: the part of the corpus CodeGeeX collected itself is Python, Java and C++.
PAPER_CRAWLED_LANGUAGES = ("Python", "Java", "C++")
MIN_STARS = 1                   # SPEC §1: at least 1 star
MAX_SIZE_KB = 10 * 1024         # SPEC §1: at most 10 MB; GitHub's `size` is in KB
SEARCH_RESULT_CAP = 1000        # GitHub serves the first 1,000 results of a search, no more
MAX_PER_PAGE = 100
FIRST_REPOSITORY_DATE = date(2007, 10, 1)  # GitHub's oldest public repositories date from October 2007
# Repositories within the size limit have tarballs far below this; it guards against a `size` that lies.
MAX_TARBALL_MB = 100
MAX_RATE_LIMIT_WAITS = 20
SHA_MEDIA_TYPE = "application/vnd.github.sha"  # GET /repos/{o}/{r}/commits/{ref} answers the bare SHA

FULL_NAME = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")  # SHA-1, or SHA-256 repositories

ONE_DAY = timedelta(days=1)
ONE_SECOND = timedelta(seconds=1)


class GithubSourceConfig(StrictModel):
    """Which repositories to find and how to talk to the API. Tokens come from the environment only."""

    type: Literal["github"] = "github"
    api_url: str = GITHUB_API_URL  # GitHub Enterprise: https://HOST/api/v3
    languages: list[str] = Field(default_factory=lambda: list(PAPER_CRAWLED_LANGUAGES),
                                 description="one search family per language (GitHub's names); [] = any")
    min_stars: StrictInt = Field(MIN_STARS, ge=0)
    max_size_kb: StrictInt = Field(MAX_SIZE_KB, ge=0)
    created_from: date = FIRST_REPOSITORY_DATE
    created_until: date | None = Field(None, description="last creation day searched; None = today")
    token_env: list[str] = Field(default_factory=lambda: ["GITHUB_TOKENS", "GITHUB_TOKEN"],
                                 description="environment variables holding one token or a comma-separated list")
    max_repos: StrictInt | None = Field(None, ge=1)
    per_page: StrictInt = Field(MAX_PER_PAGE, ge=1, le=MAX_PER_PAGE)
    request_timeout_s: StrictFloat = Field(30.0, gt=0, allow_inf_nan=False)
    max_retries: StrictInt = Field(5, ge=0, description="retries of a 5xx or network failure before giving up")
    max_rate_limit_waits: StrictInt = Field(MAX_RATE_LIMIT_WAITS, ge=0)
    backoff_base_s: StrictFloat = Field(1.0, gt=0, allow_inf_nan=False)
    backoff_max_s: StrictFloat = Field(60.0, gt=0, allow_inf_nan=False)
    max_tarball_mb: StrictFloat = Field(MAX_TARBALL_MB, gt=0, allow_inf_nan=False)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _created_order(self) -> GithubSourceConfig:
        if self.created_until is not None and self.created_until < self.created_from:
            raise ValueError(f"created_until {self.created_until} is before created_from {self.created_from}")
        return self


def _number_range(lo: int, hi: int | None) -> str:
    if hi is None:
        return f">={lo}"
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _time_range(lo: datetime, hi: datetime) -> str:
    if lo.time() == datetime.min.time() and (hi + ONE_SECOND).time() == datetime.min.time():
        return f"{lo.date().isoformat()}..{hi.date().isoformat()}"
    return f"{lo.strftime('%Y-%m-%dT%H:%M:%SZ')}..{hi.strftime('%Y-%m-%dT%H:%M:%SZ')}"


@dataclass(frozen=True)
class SearchSlice:
    """One search query: a language and inclusive ranges of creation time (UTC, whole seconds), stars and
    size in KB."""

    language: str | None
    created: tuple[datetime, datetime]
    stars: tuple[int, int | None]  # no upper bound when None
    size_kb: tuple[int, int]

    def query(self) -> str:
        parts = [f"stars:{_number_range(*self.stars)}", f"size:{_number_range(*self.size_kb)}",
                 f"created:{_time_range(*self.created)}"]
        if self.language:
            parts.append(f'language:"{self.language}"' if " " in self.language else f"language:{self.language}")
        return " ".join(parts)

    def spans_days(self) -> bool:
        return self.created[1] - self.created[0] >= ONE_DAY

    def split(self) -> tuple[SearchSlice, SearchSlice] | None:
        """Two slices that together hold exactly this one's repositories, or None when it cannot be cut.
        Creation days go first (most even), then stars, then size, then seconds within the day."""
        lo, hi = self.created
        days = (hi.date() - lo.date()).days + 1
        if days > 1:
            cut = datetime.combine(lo.date() + timedelta(days=days // 2), datetime.min.time(), timezone.utc)
            return replace(self, created=(lo, cut - ONE_SECOND)), replace(self, created=(cut, hi))
        stars_lo, stars_hi = self.stars
        if stars_hi is None:
            # Stars are heavy-tailed: cut the open range geometrically (1..2, 3..6, 7..14, ...).
            cut = 2 * stars_lo
            return replace(self, stars=(stars_lo, cut)), replace(self, stars=(cut + 1, None))
        if stars_hi > stars_lo:
            cut = (stars_lo + stars_hi) // 2
            return replace(self, stars=(stars_lo, cut)), replace(self, stars=(cut + 1, stars_hi))
        size_lo, size_hi = self.size_kb
        if size_hi > size_lo:
            cut = (size_lo + size_hi) // 2
            return replace(self, size_kb=(size_lo, cut)), replace(self, size_kb=(cut + 1, size_hi))
        if hi > lo:
            mid = lo + timedelta(seconds=(hi - lo).total_seconds() // 2)
            return replace(self, created=(lo, mid)), replace(self, created=(mid + ONE_SECOND, hi))
        return None


class GithubSource:
    """A `RepoSource` over GitHub's REST API.

    `list_repos` runs on the driver; `fetch` runs in workers. The source pickles without its client, so
    each process reads the tokens from its own environment. Pass `limiter` (a proxy to one `RateLimiter`
    hosted in an actor, sized by `token_count`) to share one budget across processes; without it, each
    process keeps its own.
    """

    def __init__(self, config: GithubSourceConfig, limiter: Limiter | None = None, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        self.config = config
        self.limiter = limiter
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.stats: Counter[str] = Counter()
        self._client: GithubClient | None = None

    def __repr__(self) -> str:
        return f"GithubSource(api_url={self.config.api_url!r}, languages={self.config.languages!r})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None  # holds the tokens, which never travel
        return state

    @property
    def token_count(self) -> int:
        """How many budgets a shared `RateLimiter` must track for the tokens in this environment."""
        return Tokens.from_env(self.config.token_env).slot_count

    def client(self) -> GithubClient:
        if self._client is None:
            cfg = self.config
            tokens = Tokens.from_env(cfg.token_env)
            if not tokens:
                log.warning("no GitHub token in %s: anonymous access allows 60 API calls an hour",
                            ", ".join(cfg.token_env))
            self._client = GithubClient(
                cfg.api_url, tokens, self.limiter or RateLimiter(tokens.slot_count, self.clock),
                timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries,
                backoff=Backoff(cfg.backoff_base_s, cfg.backoff_max_s),
                max_rate_limit_waits=cfg.max_rate_limit_waits, clock=self.clock, sleep=self.sleep, rng=self.rng)
        return self._client

    # -- enumeration --------------------------------------------------------------------------------------

    def root_slice(self, language: str | None) -> SearchSlice:
        cfg = self.config
        until = cfg.created_until or datetime.fromtimestamp(self.clock(), timezone.utc).date()
        start = datetime.combine(cfg.created_from, datetime.min.time(), timezone.utc)
        end = datetime.combine(until + ONE_DAY, datetime.min.time(), timezone.utc) - ONE_SECOND
        return SearchSlice(language, (start, end), (cfg.min_stars, None), (0, cfg.max_size_kb))

    def list_repos(self) -> Iterator[RepoRef]:
        """Every repository matching the configured search, once. `stats` then counts search calls,
        slices, duplicates and results GitHub could not serve. (The crawl's `selection` applies the
        exclusion list to every source.)"""
        cfg = self.config
        seen: set[str] = set()
        self.stats.clear()
        for language in cfg.languages or [None]:
            found_before = self.stats["listed"]
            for item in self._search(self.root_slice(language)):
                ref = self._ref(item)
                if ref is None:
                    continue
                key = ref.full_name.lower()
                if key in seen:
                    self.stats["duplicates"] += 1
                    continue
                seen.add(key)
                self.stats["listed"] += 1
                yield ref
                if cfg.max_repos is not None and self.stats["listed"] >= cfg.max_repos:
                    return
            log.info("%s: %d repositories listed (%d search calls so far)", language or "any language",
                     self.stats["listed"] - found_before, self.stats["search_calls"])

    def _search(self, root: SearchSlice) -> Iterator[dict]:
        pending = [root]
        while pending:
            piece = pending.pop()
            first = self._search_page(piece, 1)
            total = int(first.get("total_count") or 0)
            incomplete = bool(first.get("incomplete_results"))
            log.debug("%s: %d results%s", piece.query(), total, " (incomplete)" if incomplete else "")
            # A search that timed out (incomplete_results) is retried as smaller ones, but only down to a
            # day: below that, cutting costs more calls than the timeout loses.
            if total > SEARCH_RESULT_CAP or (incomplete and piece.spans_days()):
                halves = piece.split()
                if halves is not None:
                    pending.extend(reversed(halves))  # depth-first, oldest and fewest stars first
                    continue
            if total > SEARCH_RESULT_CAP:
                log.warning("%r cannot be cut further: only %d of its %d results are reachable",
                            piece.query(), SEARCH_RESULT_CAP, total)
                self.stats["unreachable_results"] += total - SEARCH_RESULT_CAP
            if incomplete:
                log.warning("%r: GitHub's search timed out on it (incomplete_results); its results may be "
                            "partial", piece.query())
                self.stats["incomplete_slices"] += 1
            self.stats["slices"] += 1
            yield from first.get("items") or []
            pages = math.ceil(min(total, SEARCH_RESULT_CAP) / self.config.per_page)
            for page in range(2, pages + 1):
                items = self._search_page(piece, page).get("items") or []
                yield from items
                if len(items) < self.config.per_page:
                    break

    def _search_page(self, piece: SearchSlice, page: int) -> dict[str, Any]:
        self.stats["search_calls"] += 1
        params = {"q": piece.query(), "sort": "stars", "order": "desc", "per_page": self.config.per_page,
                  "page": page}
        return self.client().get_json("/search/repositories", params, resource=SEARCH)

    def _ref(self, item: Any) -> RepoRef | None:
        full_name = item.get("full_name") if isinstance(item, dict) else None
        if not isinstance(full_name, str) or not FULL_NAME.match(full_name):
            log.warning("search returned an item without a usable full_name: %.200r", item)
            self.stats["malformed_items"] += 1
            return None
        branch = item.get("default_branch") or None
        license_ = item.get("license") or {}
        return RepoRef(
            full_name=full_name, source="github",
            location=f"{self.config.api_url}/repos/{full_name}/tarball/{quote(branch or 'HEAD', safe='/')}",
            stars=item.get("stargazers_count"), size_kb=item.get("size"),
            main_language=normalize_language(item.get("language")),
            license=license_.get("spdx_id") if isinstance(license_, dict) else None,
            default_branch=branch)

    # -- fetching -----------------------------------------------------------------------------------------

    def fetch(self, ref: RepoRef, workdir: str) -> FetchedRepo:
        """The tarball of the default branch's current commit, as `workdir/owner__name__SHA.tar.gz`.
        The commit is resolved first and the tarball asked for by SHA, so the recorded commit is the one
        downloaded. A tarball already downloaded for that commit is reused."""
        if not FULL_NAME.match(ref.full_name):
            raise FetchError(f"{ref.full_name!r} is not a GitHub owner/name")
        branch = quote(ref.default_branch or "HEAD", safe="/")
        client = self.client()
        try:
            sha = client.get_text(f"/repos/{ref.full_name}/commits/{branch}", SHA_MEDIA_TYPE, CORE).strip()
            if not COMMIT_SHA.match(sha):
                raise FetchError(f"{ref.full_name}: resolving {branch} gave {sha[:80]!r}, not a commit SHA")
            owner, name = ref.full_name.split("/")
            dest = os.path.join(workdir, f"{owner}__{name}__{sha}.tar.gz")
            if not os.path.exists(dest):
                os.makedirs(workdir, exist_ok=True)
                size = client.download(f"/repos/{ref.full_name}/tarball/{sha}", dest,
                                       int(self.config.max_tarball_mb * 1024 * 1024), CORE)
                log.debug("%s: %s, %d bytes", ref.full_name, sha, size)
        except ApiError as err:
            raise FetchError(str(err)) from None
        return FetchedRepo(ref=ref, path=dest, commit=sha)
