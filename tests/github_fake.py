"""A local GitHub for tests: the REST API endpoints the crawler uses, and a codeload host for tarballs.

Two real HTTP servers on 127.0.0.1 share one state:

- API: `GET /search/repositories` (qualifiers stars:, size:, created:, language:; sort, order, page,
  per_page; only the first 1,000 results, later pages answer 422), `GET /repos/{o}/{r}/commits/{ref}`
  (JSON, or the bare SHA for `Accept: application/vnd.github.sha`), `GET /repos/{o}/{r}/tarball/{ref}`
  (a 302 to the codeload host, as GitHub does); a renamed repository's old name answers 301 to
  `/repositories/{id}/...`.
- codeload: `GET /{o}/{r}/legacy.tar.gz/{ref}`: a real tar.gz made like `git archive` makes GitHub's: a pax
  global header whose comment is the commit SHA, and one top folder `owner-repo-sha7/`.

Every API response carries GitHub's rate-limit headers, counted per token and per resource ("core",
"search") on an injectable clock; a spent budget answers 403 with `X-RateLimit-Remaining: 0`. Faults can be
injected (an HTTP status with optional `Retry-After`, a dropped connection, a body cut short), and every
request is recorded (which server, path, query, token, status).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import json
import random
import re
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from loopback_http import LoopbackHTTPServer

SEARCH_RESULT_CAP = 1000
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30
CORE_LIMIT, SEARCH_LIMIT = 5000, 30
ANONYMOUS_CORE_LIMIT, ANONYMOUS_SEARCH_LIMIT = 60, 10
WINDOW_S = {"core": 3600, "search": 60}
FAKE_NOW = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()
FIRST_CREATED = datetime(2008, 1, 1, tzinfo=timezone.utc)
BURST_DAY = date(2020, 4, 1)
HOSTILE_KINDS = ("dotdot", "absolute", "symlink", "hardlink", "device", "huge")
HUGE_MEMBER_BYTES = 256 * 1024 * 1024
SHA_MEDIA_TYPES = ("application/vnd.github.sha", "application/vnd.github.v3.sha")
LICENSES = ("MIT", "Apache-2.0", "GPL-3.0", "BSD-3-Clause", "NOASSERTION", None)
EXTENSIONS = {"Python": ".py", "Java": ".java", "C++": ".cpp", "Go": ".go"}


class FakeClock:
    """Time that moves only when someone sleeps: rate-limit waits take no real time."""

    def __init__(self, start: float = FAKE_NOW):
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __getstate__(self) -> dict:
        return {"now": self._now, "sleeps": self.sleeps}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["now"])
        self.sleeps = state["sleeps"]

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)
            self.sleeps.append(seconds)


@dataclass
class FakeRepo:
    id: int
    full_name: str
    stars: int
    size_kb: int
    language: str | None
    created_at: datetime
    license: str | None = "MIT"
    default_branch: str = "main"
    commits: list[str] = field(default_factory=list)  # oldest first; none: an empty repository
    hostile: str | None = None  # one of HOSTILE_KINDS

    @property
    def head(self) -> str | None:
        return self.commits[-1] if self.commits else None

    def push(self) -> str:
        """A new commit on the default branch."""
        sha = hashlib.sha1(f"{self.full_name}@{len(self.commits)}".encode()).hexdigest()
        self.commits.append(sha)
        return sha

    def search_item(self, api_url: str) -> dict:
        owner, name = self.full_name.split("/")
        license_ = None if self.license is None else {
            "key": self.license.lower(), "name": self.license, "spdx_id": self.license,
            "url": None if self.license == "NOASSERTION" else f"{api_url}/licenses/{self.license.lower()}",
            "node_id": f"MDc6TGljZW5zZ{self.license}"}
        created = self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "id": self.id, "node_id": f"MDEwOlJlcG9zaXRvcnk{self.id}", "name": name, "full_name": self.full_name,
            "private": False, "owner": {"login": owner, "id": zlib.crc32(owner.encode()), "type": "User"},
            "html_url": f"https://github.com/{self.full_name}", "description": f"{name} by {owner}",
            "fork": False, "url": f"{api_url}/repos/{self.full_name}", "created_at": created,
            "updated_at": created, "pushed_at": created, "homepage": None, "size": self.size_kb,
            "stargazers_count": self.stars, "watchers_count": self.stars, "language": self.language,
            "forks_count": self.stars // 10, "open_issues_count": 0, "license": license_, "topics": [],
            "visibility": "public", "archived": False, "default_branch": self.default_branch, "score": 1.0,
        }


def make_population(count: int = 3000, burst: int = 1200, seed: int = 7) -> list[FakeRepo]:
    """`count` repositories spread over 2008-2024 (more of them recent), with stars (some 0), sizes (some
    over 10 MB), languages and licenses; plus `burst` Python repositories created on one day, more than
    one search can return, so that the crawler must split a single day by stars."""
    rng = random.Random(seed)
    span = (datetime.fromtimestamp(FAKE_NOW, timezone.utc) - FIRST_CREATED).total_seconds()
    repos = []
    for i in range(count + burst):
        if i < count:
            language = rng.choices(["Python", "Java", "C++", "Go", None], [45, 25, 18, 10, 2])[0]
            created = FIRST_CREATED + timedelta(seconds=int(span * rng.random() ** 0.5))
            stars = 0 if rng.random() < 0.15 else min(200_000, int(rng.paretovariate(0.8)))
            size_kb = rng.randint(10_241, 500_000) if rng.random() < 0.12 else rng.randint(0, 10_240)
        else:
            language = "Python"
            created = datetime.combine(BURST_DAY, time(), timezone.utc) + timedelta(seconds=rng.randrange(86_400))
            stars = 1 + int(rng.expovariate(0.1))
            size_kb = rng.randint(1, 10_240)
        branch = rng.choices(["main", "master", "release/2.x"], [60, 35, 5])[0]
        repo = FakeRepo(id=1000 + i, full_name=f"Dev{rng.randrange(700)}/project-{i}", stars=stars,
                        size_kb=size_kb, language=language, created_at=created,
                        license=rng.choice(LICENSES), default_branch=branch)
        if rng.random() > 0.002:  # a few repositories are empty
            repo.push()
        repos.append(repo)
    return repos


def hostile_repo(kind: str, repo_id: int = 1) -> FakeRepo:
    repo = FakeRepo(id=repo_id, full_name=f"mallory/{kind}", stars=5, size_kb=100, language="Python",
                    created_at=datetime(2021, 6, 1, tzinfo=timezone.utc), hostile=kind)
    repo.push()
    return repo


# -- tarballs ------------------------------------------------------------------------------------------------

class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    info.mtime = 1_600_000_000
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)


def _hostile_members(tar: tarfile.TarFile, top: str, kind: str) -> None:
    if kind == "dotdot":
        _add(tar, f"{top}../../escaped.py", b"print('escaped')\n")
        _add(tar, "../outside.py", b"print('outside')\n")
    elif kind == "absolute":
        _add(tar, "/tmp/codemill-absolute.py", b"print('absolute')\n")
    elif kind == "symlink":
        _add(tar, f"{top}passwd", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tar, f"{top}up", type=tarfile.SYMTYPE, linkname="../../../../tmp")
        _add(tar, f"{top}up/through-link.py", b"print('written through a link')\n")
    elif kind == "hardlink":
        _add(tar, f"{top}shadow", type=tarfile.LNKTYPE, linkname="/etc/shadow")
        _add(tar, f"{top}sibling", type=tarfile.LNKTYPE, linkname="../../outside")
    elif kind == "device":
        _add(tar, f"{top}null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        _add(tar, f"{top}disk", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
        _add(tar, f"{top}pipe", type=tarfile.FIFOTYPE)
    elif kind == "huge":
        info = tarfile.TarInfo(f"{top}huge.py")
        info.size, info.mtime, info.mode = HUGE_MEMBER_BYTES, 1_600_000_000, 0o644
        tar.addfile(info, _Zeros(HUGE_MEMBER_BYTES))
    else:
        raise ValueError(f"unknown hostile kind {kind!r}")


@functools.lru_cache(maxsize=64)  # the huge hostile member takes seconds to compress: build each once
def make_tarball(full_name: str, language: str | None, hostile: str | None, sha: str) -> bytes:
    owner, name = full_name.split("/")
    top = f"{owner}-{name}-{sha[:7]}/"
    suffix = EXTENSIONS.get(language or "", ".txt")
    buffer = io.BytesIO()
    # Like `git archive`: pax format, the commit in the global header's comment.
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": sha},
                      compresslevel=6) as tar:
        _add(tar, top, type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, f"{top}README.md", f"# {full_name}\n\ncommit {sha}\n".encode())
        _add(tar, f"{top}src/", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, f"{top}src/main{suffix}", f"// {full_name} at {sha}\n".encode() * 40)
        if hostile:
            _hostile_members(tar, top, hostile)
    return buffer.getvalue()


# -- search queries ------------------------------------------------------------------------------------------

QUALIFIER = re.compile(r'(\w+):("[^"]*"|\S+)')


class QueryError(ValueError):
    pass


def _bounds(text: str, parse: Callable[[str, bool], float]) -> tuple[float, float]:
    """GitHub's range syntax -> inclusive (low, high); `parse(value, as_upper)`."""
    inf = float("inf")
    if ".." in text:
        lo, hi = text.split("..", 1)
        return (-inf if lo == "*" else parse(lo, False)), (inf if hi == "*" else parse(hi, True))
    for op in (">=", "<=", ">", "<"):
        if text.startswith(op):
            value = text[len(op):]
            if op == ">=":
                return parse(value, False), inf
            if op == "<=":
                return -inf, parse(value, True)
            if op == ">":
                return parse(value, True) + 1, inf
            return -inf, parse(value, False) - 1
    return parse(text, False), parse(text, True)


def _integer(value: str, _upper: bool) -> float:
    if not value.isdigit():
        raise QueryError(f"not a number: {value!r}")
    return int(value)


def _instant(value: str, upper: bool) -> float:
    """A date means its whole day: its first second as a lower bound, its last as an upper one."""
    try:
        if "T" in value:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        day = date.fromisoformat(value)
    except ValueError:
        raise QueryError(f"not a date: {value!r}") from None
    start = datetime.combine(day, time(), timezone.utc).timestamp()
    return start + 86_399 if upper else start


@dataclass(frozen=True)
class Query:
    created: tuple[float, float]  # inclusive epoch bounds, so a search can bisect a creation-ordered list
    check: Callable[[FakeRepo], bool]


def parse_query(q: str) -> Query:
    checks: list[Callable[[FakeRepo], bool]] = []
    created = (float("-inf"), float("inf"))
    for key, raw in QUALIFIER.findall(q):
        value = raw.strip('"')
        if key == "stars":
            lo, hi = _bounds(value, _integer)
            checks.append(lambda r, lo=lo, hi=hi: lo <= r.stars <= hi)
        elif key == "size":
            lo, hi = _bounds(value, _integer)
            checks.append(lambda r, lo=lo, hi=hi: lo <= r.size_kb <= hi)
        elif key == "created":
            lo, hi = _bounds(value, _instant)
            created = (max(created[0], lo), min(created[1], hi))
        elif key == "language":
            checks.append(lambda r, v=value.lower(): (r.language or "").lower() == v)
        else:
            raise QueryError(f"the fake does not know the qualifier {key!r}")
    if QUALIFIER.sub("", q).strip():
        raise QueryError(f"the fake searches qualifiers only, not text: {QUALIFIER.sub('', q).strip()!r}")
    return Query(created, lambda repo: all(check(repo) for check in checks))


# -- the servers ---------------------------------------------------------------------------------------------

@dataclass
class Recorded:
    server: str        # "api" or "codeload"
    path: str
    query: dict[str, str]
    token: str | None  # the token presented, if any
    status: int


@dataclass
class _Fault:
    server: str
    path_prefix: str
    kind: str          # "status", "drop", "truncate"
    times: int
    status: int = 502
    headers: dict = field(default_factory=dict)
    message: str = "Server Error"


class FakeGithub:
    """Use as a context manager; `api_url` is what the crawler's `api_url` should be."""

    def __init__(self, repos: Iterable[FakeRepo], tokens: dict[str, dict[str, int] | None] | None = None,
                 clock: FakeClock | None = None, incomplete_over: int | None = None):
        self.repos = {r.full_name.lower(): r for r in repos}
        # token -> its limits per resource (None: GitHub's defaults for an authenticated user)
        self.tokens = {t: {"core": CORE_LIMIT, "search": SEARCH_LIMIT, **(limits or {})}
                       for t, limits in (tokens or {}).items()}
        self.clock = clock or FakeClock()
        self.incomplete_over = incomplete_over  # searches matching more than this report incomplete_results
        self.by_id = {str(r.id): r for r in self.repos.values()}
        self.moved: dict[str, FakeRepo] = {}  # old full name (lower case) -> the repository, renamed
        self.requests: list[Recorded] = []
        self._windows: dict[tuple[str | None, str], list[float]] = {}  # -> [remaining, reset_at]
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._servers: list[LoopbackHTTPServer] = []
        self.api_url = self.codeload_url = ""
        self._by_created = sorted(self.repos.values(), key=lambda r: r.created_at)
        self._created_at = [r.created_at.timestamp() for r in self._by_created]

    # -- lifecycle
    def __enter__(self) -> FakeGithub:
        for role in ("api", "codeload"):
            server = LoopbackHTTPServer(_Handler)
            server.server.fake, server.server.role = self, role
            self._servers.append(server)
            if role == "api":
                self.api_url = server.url
            else:
                self.codeload_url = server.url
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.close()

    # -- what tests ask for
    def matching(self, q: str) -> list[FakeRepo]:
        """The repositories a search for `q` finds, in GitHub's default order (here: by id)."""
        query = parse_query(q)
        lo = bisect.bisect_left(self._created_at, query.created[0])
        hi = bisect.bisect_right(self._created_at, query.created[1])
        return sorted((r for r in self._by_created[lo:hi] if query.check(r)), key=lambda r: r.id)

    def rename(self, repo: FakeRepo, new_full_name: str) -> None:
        old = repo.full_name.lower()
        repo.full_name = new_full_name
        self.repos[new_full_name.lower()] = self.repos.pop(old)
        self.moved[old] = repo

    def inject(self, path_prefix: str, status: int = 502, times: int = 1, retry_after: float | None = None,
               message: str = "Server Error", headers: dict | None = None, server: str = "api") -> None:
        headers = dict(headers or {})
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self._faults.append(_Fault(server, path_prefix, "status", times, status, headers, message))

    def drop(self, path_prefix: str, times: int = 1, server: str = "api") -> None:
        """Close the connection without answering."""
        self._faults.append(_Fault(server, path_prefix, "drop", times))

    def truncate(self, path_prefix: str, times: int = 1, server: str = "codeload") -> None:
        """Answer with the full Content-Length but send only half of the body."""
        self._faults.append(_Fault(server, path_prefix, "truncate", times))

    def exhaust(self, token: str | None, resource: str) -> None:
        """Spend a token's budget, as other clients of the same token would."""
        with self._lock:
            self._window(token, resource)[0] = 0

    def tarball(self, repo: FakeRepo, sha: str) -> bytes:
        return make_tarball(repo.full_name, repo.language, repo.hostile, sha)

    def recorded(self, server: str = "api", path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.server == server and r.path.startswith(path_prefix)]

    # -- internals used by the handler
    def _window(self, token: str | None, resource: str) -> list[float]:
        limit = self.tokens[token][resource] if token is not None else (
            ANONYMOUS_CORE_LIMIT if resource == "core" else ANONYMOUS_SEARCH_LIMIT)
        now = self.clock.time()
        window = self._windows.get((token, resource))
        if window is None or now >= window[1]:
            window = self._windows[(token, resource)] = [limit, float(int(now) + WINDOW_S[resource])]
        return window

    def _take_fault(self, server: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.server == server and path.startswith(fault.path_prefix) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _spend(self, token: str | None, resource: str) -> tuple[bool, dict[str, str]]:
        with self._lock:
            window = self._window(token, resource)
            allowed = window[0] > 0
            if allowed:
                window[0] -= 1
            limit = self.tokens[token][resource] if token is not None else (
                ANONYMOUS_CORE_LIMIT if resource == "core" else ANONYMOUS_SEARCH_LIMIT)
            headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(int(window[0])),
                       "X-RateLimit-Reset": str(int(window[1])), "X-RateLimit-Used": str(int(limit - window[0])),
                       "X-RateLimit-Resource": resource}
        return allowed, headers

    def _resolve(self, repo: FakeRepo, ref: str) -> str | None:
        ref = ref.removeprefix("refs/heads/")
        if ref in ("HEAD", repo.default_branch):
            return repo.head
        return ref if ref in repo.commits else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeGitHub/1.0"

    def log_message(self, *args) -> None:
        pass

    @property
    def fake(self) -> FakeGithub:
        return self.server.fake

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        self._path = unquote(split.path)
        self._query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self._presented = self._token()
        self._serve(self._path, self._query, self._presented)

    def _record(self, status: int) -> None:
        # Before the answer goes out: a client that has its answer finds its request already recorded.
        with self.fake._lock:
            self.fake.requests.append(Recorded(self.server.role, self._path, self._query, self._presented, status))

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        for scheme in ("Bearer ", "token "):
            if auth.startswith(scheme):
                return auth[len(scheme):]
        return None

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None,
              truncate: bool = False) -> int:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate:
            self.close_connection = True
        return status

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> int:
        return self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> int:
        return self._json(status, {"message": message, "documentation_url": "https://docs.github.com/rest"}, headers)

    def _serve(self, path: str, query: dict[str, str], token: str | None) -> int:
        fault = self.fake._take_fault(self.server.role, path)
        if fault is not None and fault.kind == "drop":
            self._record(0)
            self.close_connection = True
            self.connection.shutdown(2)
            return 0
        if fault is not None and fault.kind == "status":
            return self._error(fault.status, fault.message, fault.headers)
        truncate = fault is not None and fault.kind == "truncate"
        if self.server.role == "codeload":
            return self._codeload(path, truncate)
        if token is not None and token not in self.fake.tokens:
            return self._error(401, "Bad credentials")
        resource = "search" if path.startswith("/search/") else "core"
        allowed, rate = self.fake._spend(token, resource)
        if not allowed:
            return self._error(403, "API rate limit exceeded for user ID 1. If you reach out to GitHub Support "
                               "for help, please include the request ID.", rate)
        if path == "/search/repositories":
            return self._search(query, rate)
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)", path)
        if match and f"{match[1]}/{match[2]}".lower() in self.fake.moved:
            # A renamed repository: GitHub answers its old name with a redirect to its id.
            moved = self.fake.moved[f"{match[1]}/{match[2]}".lower()]
            return self._send(301, b"", "application/json", {**rate, "Location":
                              f"{self.fake.api_url}/repositories/{moved.id}{match[3]}"})
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)/(commits|tarball)(?:/(.+))?", path) or re.fullmatch(
            r"/repositories/(\d+)/(commits|tarball)(?:/(.+))?", path)
        repo = (self.fake.repos.get(match[1].lower()) or self.fake.by_id.get(match[1])) if match else None
        if repo is None:
            return self._error(404, "Not Found", rate)
        if match[2] == "commits":
            return self._commit(repo, match[3] or "HEAD", rate)
        return self._tarball_redirect(repo, match[3] or "HEAD", rate)

    def _search(self, query: dict[str, str], rate: dict[str, str]) -> int:
        try:
            matches = self.fake.matching(query.get("q", ""))
        except QueryError as exc:
            return self._json(422, {"message": "Validation Failed", "errors": [{"message": str(exc)}]}, rate)
        sort, order = query.get("sort"), query.get("order", "desc")
        if sort in ("stars", "forks", "updated"):
            key = {"stars": lambda r: r.stars, "forks": lambda r: r.stars // 10,
                   "updated": lambda r: r.created_at.timestamp()}[sort]
            matches = sorted(matches, key=lambda r: (key(r), r.id), reverse=(order == "desc"))
        per_page = min(int(query.get("per_page", DEFAULT_PER_PAGE)), MAX_PER_PAGE)
        page = int(query.get("page", 1))
        start = (page - 1) * per_page
        if start >= SEARCH_RESULT_CAP:
            return self._error(422, "Only the first 1000 search results are available", rate)
        items = matches[start:min(start + per_page, SEARCH_RESULT_CAP)]
        incomplete = self.fake.incomplete_over is not None and len(matches) > self.fake.incomplete_over
        return self._json(200, {"total_count": len(matches), "incomplete_results": incomplete,
                                "items": [r.search_item(self.fake.api_url) for r in items]}, rate)

    def _commit(self, repo: FakeRepo, ref: str, rate: dict[str, str]) -> int:
        if not repo.commits:
            return self._error(409, "Git Repository is empty.", rate)
        sha = self.fake._resolve(repo, ref)
        if sha is None:
            return self._error(422, f"No commit found for SHA: {ref}", rate)
        if self.headers.get("Accept", "") in SHA_MEDIA_TYPES:
            return self._send(200, sha.encode(), "application/vnd.github.sha; charset=utf-8", rate)
        return self._json(200, {"sha": sha, "node_id": f"C_{sha[:12]}", "url": f"{self.fake.api_url}/repos/"
                                f"{repo.full_name}/commits/{sha}", "commit": {"message": "update",
                                "tree": {"sha": hashlib.sha1(sha.encode()).hexdigest()}}}, rate)

    def _tarball_redirect(self, repo: FakeRepo, ref: str, rate: dict[str, str]) -> int:
        if self.fake._resolve(repo, ref) is None:
            return self._error(404, "Not Found", rate)
        location = f"{self.fake.codeload_url}/{repo.full_name}/legacy.tar.gz/{ref}"
        return self._send(302, b"", "text/html;charset=utf-8", {**rate, "Location": location})

    def _codeload(self, path: str, truncate: bool) -> int:
        match = re.fullmatch(r"/([^/]+)/([^/]+)/legacy\.tar\.gz/(.+)", path)
        repo = self.fake.repos.get(f"{match[1]}/{match[2]}".lower()) if match else None
        sha = self.fake._resolve(repo, match[3]) if repo else None
        if sha is None:
            return self._send(404, b"404: Not Found", "text/plain; charset=utf-8")
        owner, name = repo.full_name.split("/")
        body = self.fake.tarball(repo, sha)
        disposition = f"attachment; filename={owner}-{name}-{sha[:7]}.tar.gz"
        return self._send(200, body, "application/x-gzip", {"Content-Disposition": disposition}, truncate)
