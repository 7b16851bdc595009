"""Repositories from a list of clone URLs: anything `git clone` accepts (https, ssh, `git@host:o/r`,
`file://`, a local path), cloned shallow into the worker's scratch folder.

    source: {type: git, urls: [URL, ...], metadata: FILE, depth: 1}

A repository's full name is the URL's last two path parts (`owner/name` for GitHub-like URLs, `.git`
dropped); a name met again becomes `name~2`, ... in listing order. Stars, size, license and main
language come from the optional metadata file; a repository it does not list gets `default_stars`
(None: unknown, left to the crawl's selection) and its size measured on the clone.
Git runs without prompts (`GIT_TERMINAL_PROMPT=0`), without LFS downloads, with the `ext::` transport
(which runs commands) refused, and in its own process group so a timeout kills its helpers too.
Credentials in URLs (`https://user:token@host/...`) never appear in names, logs or skip reasons, and never
on git's command line (which `ps` shows to every user of the node): git gets the URL without them and the
credentials as an `Authorization` header scoped to that origin, through its environment
(`GIT_CONFIG_COUNT`), which only the same user can read.
A repository's work folder is named by its key (`codemill.crawl.keys`), never by its name.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, StrictFloat, StrictInt, field_validator

from codemill.config import StrictModel
from codemill.crawl.keys import remove_inside, repo_key, unsafe_name_reason
from codemill.crawl.sources.base import FetchedRepo, FetchError, RepoRef
from codemill.crawl.sources.repo_info import existing_metadata_file, load_metadata, size_kb_on_disk, unique_names
from codemill.secrets import redact_url

SOURCE_NAME = "git"
DEFAULT_DEPTH = 1
DEFAULT_CLONE_TIMEOUT_S = 600.0
MAX_REASON_CHARS = 2000  # git's stderr can be long; the skip reason keeps its end, where the error is

# scheme://userinfo@rest: like `redact_url`, the credentials run to the LAST '@' (a password nobody
# URL-encoded may hold '@' and '/'), so what is hidden from logs is exactly what is taken off the URL.
_URL_WITH_CREDENTIALS = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>.*)@(?P<rest>[^@]*)$")
_SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?[\w.-]+:(?!//)(?P<path>.+)$")  # git@github.com:owner/name.git
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", "GIT_LFS_SKIP_SMUDGE": "1", "LC_ALL": "C"}


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without credentials, git configuration that sends them) for an http(s) URL with
    `user:password@`; (url, {}) otherwise. The header is scoped to the URL's origin, so a redirect to
    another host never receives it."""
    match = _URL_WITH_CREDENTIALS.match(url)
    if match is None or match.group("scheme").lower() not in ("http", "https"):
        return url, {}
    user, _, password = match.group("userinfo").partition(":")
    bare = f"{match.group('scheme')}://{match.group('rest')}"
    origin = urlsplit(bare)
    basic = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return bare, {f"http.{origin.scheme}://{origin.netloc}/.extraHeader": f"Authorization: Basic {basic}"}


def _config_env(settings: dict[str, str]) -> dict[str, str]:
    """git configuration passed through the environment (git >= 2.31), never through argv."""
    if not settings:
        return {}
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for i, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


def repo_name_from_url(url: str) -> str:
    """`https://github.com/Owner/Name.git` -> `Owner/Name`; `/srv/git/tools` -> `git/tools`."""
    url = split_credentials(url.strip())[0].rstrip("/")
    if "://" in url:
        path = urlsplit(url).path
    else:
        match = _SCP_LIKE.match(url)
        path = match.group("path") if match and not os.path.isabs(url) else url
    parts = [p for p in path.split("/") if p not in ("", ".", "..")]
    if parts and parts[-1].endswith(".git"):
        parts[-1] = parts[-1][: -len(".git")]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError(f"cannot name a repository after {redact_url(url)!r}: its path is empty")
    name = "/".join(parts[-2:])
    # `https://host/...git` names `..`: refused, as is anything else that is not a plain name.
    problem = unsafe_name_reason(name)
    if problem:
        raise ValueError(f"cannot name a repository after {redact_url(url)!r}: the name {name!r} {problem}")
    return name


class GitSourceConfig(StrictModel):
    type: Literal["git"] = "git"
    urls: list[str] = Field(min_length=1)
    metadata: str | None = None
    depth: StrictInt = Field(DEFAULT_DEPTH, ge=1)
    clone_timeout_s: StrictFloat = Field(DEFAULT_CLONE_TIMEOUT_S, gt=0, allow_inf_nan=False)
    default_stars: StrictInt | None = Field(None, ge=0)

    @field_validator("urls")
    @classmethod
    def _urls_are_clonable(cls, urls: list[str]) -> list[str]:
        seen = set()
        for url in urls:
            shown = redact_url(url)
            if not url.strip() or any(c.isspace() for c in url.strip()):
                raise ValueError(f"{shown!r} is not a clone URL (empty, or contains whitespace)")
            if url.startswith("-"):
                raise ValueError(f"{shown!r} starts with '-' (git would read it as an option)")
            if url.lower().startswith("ext::"):
                raise ValueError(f"{shown!r}: the ext:: transport runs commands and is refused")
            match = _URL_WITH_CREDENTIALS.match(url)
            if match and ":" in match.group("userinfo") and match.group("scheme").lower() not in ("http", "https"):
                raise ValueError(f"{shown!r}: a password is only passed safely (off git's command line) "
                                 "for http(s) URLs; use an SSH key or an https URL")
            repo_name_from_url(url)
            if url in seen:
                raise ValueError(f"{shown} is listed twice")
            seen.add(url)
        return urls

    _metadata_exists = field_validator("metadata")(existing_metadata_file)


def _run_git(args: list[str], timeout_s: float, cwd: str | None = None, config: dict[str, str] | None = None) -> str:
    """stdout of `git args...`; FetchError with git's (redacted) stderr on failure or timeout. `config`
    (secrets included) reaches git through its environment."""
    env = {**os.environ, **_GIT_ENV, **_config_env(config or {})}
    try:
        proc = subprocess.Popen(["git", "-c", "protocol.ext.allow=never", *args], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    except FileNotFoundError:
        raise FetchError("git is not installed on this worker") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise FetchError(f"git {args[0]} timed out after {timeout_s:g}s") from None
    if proc.returncode != 0:
        message = redact_url(err.strip())[-MAX_REASON_CHARS:] or f"exit status {proc.returncode}"
        raise FetchError(f"git {args[0]} failed: {message}")
    return out.strip()


class GitSource:
    def __init__(self, config: GitSourceConfig):
        self.config = config
        self.metadata = load_metadata(config.metadata)

    def list_repos(self) -> Iterator[RepoRef]:
        names = unique_names([repo_name_from_url(u) for u in self.config.urls])
        for name, url in zip(names, self.config.urls):
            facts = self.metadata.get(name)
            stars = facts.stars if facts and facts.stars is not None else self.config.default_stars
            yield RepoRef(full_name=name, source=SOURCE_NAME, location=url, stars=stars,
                          size_kb=facts.size_kb if facts else None,
                          main_language=facts.main_language if facts else None,
                          license=facts.license if facts else None,
                          default_branch=facts.default_branch if facts else None)

    def fetch(self, ref: RepoRef, workdir: str) -> FetchedRepo:
        """Clone into `workdir`; the ref returned carries the branch cloned and, when the metadata had
        none, the size of the checkout."""
        dest = os.path.join(workdir, repo_key(ref.full_name))
        if os.path.lexists(dest):  # a retried task
            remove_inside(dest, workdir)
        timeout = self.config.clone_timeout_s
        url, credentials = split_credentials(ref.location)
        _run_git(["clone", "--depth", str(self.config.depth), "--quiet", "--", url, dest], timeout, config=credentials)
        commit = _run_git(["rev-parse", "HEAD"], timeout, cwd=dest)
        try:
            branch = _run_git(["symbolic-ref", "--short", "HEAD"], timeout, cwd=dest)
        except FetchError:  # a detached HEAD: the remote's HEAD is not a branch
            branch = None
        ref = dataclasses.replace(ref, default_branch=branch or ref.default_branch,
                                  size_kb=ref.size_kb if ref.size_kb is not None else size_kb_on_disk(dest))
        return FetchedRepo(ref=ref, path=dest, commit=commit)
