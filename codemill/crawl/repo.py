"""Crawl one repository: fetch it, extract its files safely, select it, write its output parts.

Every repository writes its own parts, named by a key derived from its name, and `repos/<key>.parquet`
last: that file is the repository's completion marker, and records the hash of the settings its outputs
were made under (`codemill.crawl.outputs`). A redo first removes what an earlier run left (marker
first), so a repository rejected or failed this time keeps no old files, and the output never holds a
file twice. A repository that fails (fetch, a corrupt or cut-short archive, any error) gets one record in
`skipped/<key>.parquet` with the reason, no files and no marker: the next run retries it.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from codemill import storage
from codemill.crawl import extract
from codemill.crawl.keys import repo_key, unsafe_name_reason
from codemill.crawl.outputs import part_uri, remove_parts
from codemill.crawl.repo_language import bytes_by_extension, main_language
from codemill.crawl.schema import FILES_SCHEMA, REPOS_SCHEMA, SKIPPED_SCHEMA
from codemill.crawl.selection import SelectionConfig, rejection_reason
from codemill.crawl.sources.base import FetchError, RepoRef, RepoSource
from codemill.secrets import redact_url
from codemill.stages import CRAWL_FILES, CRAWL_REPOS, CRAWL_SKIPPED

__all__ = ["RepoResult", "crawl_repo", "record_failure", "repo_key", "skipped_table"]

MAX_REASON_CHARS = 2000


@dataclass
class RepoResult:
    full_name: str
    selected: bool
    reason: str | None = None
    n_files: int = 0
    n_bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed: bool = False


def skipped_table(rows: list[tuple[str, str, str]]) -> pa.Table:
    repo, path, reason = (list(c) for c in zip(*rows)) if rows else ([], [], [])
    return pa.table({"repo": repo, "path": path, "reason": reason}, schema=SKIPPED_SCHEMA)


def repos_row(ref: RepoRef, commit: str | None, result: RepoResult, size_kb: int | None,
              language: str | None, config_hash: str) -> pa.Table:
    row = {
        "full_name": [ref.full_name], "stars": [ref.stars], "size_kb": [size_kb],
        "main_language": [language], "license": [ref.license], "default_branch": [ref.default_branch],
        "commit": [commit], "source": [ref.source],
        "fetched_at": [dt.datetime.now(dt.timezone.utc).replace(microsecond=0)],
        "n_files": [result.n_files], "n_skipped": [sum(result.skipped.values())],
        "selected": [result.selected], "reject_reason": [result.reason], "config_hash": [config_hash],
    }
    return pa.table(row, schema=REPOS_SCHEMA)


def record_failure(out: str, full_name: str, reason: str) -> RepoResult:
    """One repository failed: its reason (credentials redacted) in `skipped/<key>.parquet`, no files, no
    marker."""
    key = repo_key(full_name)
    reason = redact_url(reason)[:MAX_REASON_CHARS]
    storage.delete_file(part_uri(out, CRAWL_REPOS, key))
    storage.delete_file(part_uri(out, CRAWL_FILES, key))
    storage.write_table(skipped_table([(full_name, "", reason)]), part_uri(out, CRAWL_SKIPPED, key))
    return RepoResult(full_name, selected=False, reason=reason, failed=True)


def crawl_repo(ref: RepoRef, source: RepoSource, selection: SelectionConfig, limits: extract.ExtractLimits,
               out: str, config_hash: str) -> RepoResult:
    """Crawl `ref`; whatever goes wrong with this one repository is recorded, never raised, so one bad
    repository cannot stop a crawl of millions."""
    problem = unsafe_name_reason(ref.full_name)
    if problem:
        return record_failure(out, ref.full_name, f"name: {ref.full_name!r} {problem}")
    try:
        remove_parts(out, repo_key(ref.full_name))
        return _crawl_repo(ref, source, selection, limits, out, config_hash)
    except Exception as exc:
        return record_failure(out, ref.full_name, f"error: {type(exc).__name__}: {exc}")


def _crawl_repo(ref: RepoRef, source: RepoSource, selection: SelectionConfig, limits: extract.ExtractLimits,
                out: str, config_hash: str) -> RepoResult:
    key = repo_key(ref.full_name)
    result = RepoResult(ref.full_name, selected=True)
    with tempfile.TemporaryDirectory(prefix="codemill-crawl-") as workdir:
        try:
            fetched = source.fetch(ref, workdir)
        except FetchError as exc:
            return record_failure(out, ref.full_name, f"fetch: {exc}")
        files, skips = [], []
        for item in extract.iter_repo_files(fetched.path, ref.full_name, limits, files_only=fetched.files_only):
            if isinstance(item, extract.SkippedFile):
                if item.reason == extract.SKIP_ARCHIVE_ERROR:
                    # A corrupt or cut-short archive: what was read before the damage is not the repository.
                    where = f"after {item.path!r}" if item.path else "at its start"
                    return record_failure(out, ref.full_name, f"{extract.SKIP_ARCHIVE_ERROR}: unreadable {where}")
                skips.append((ref.full_name, item.path, item.reason))
                result.skipped[item.reason] += 1
            else:
                files.append(item)
    size_kb = fetched.ref.size_kb if fetched.ref.size_kb is not None else -(-sum(f.size_bytes for f in files) // 1024)
    language = main_language(bytes_by_extension(files), repo_hint=fetched.ref.main_language)
    # The fetch may know more than the listing did (a clone's branch and measured size).
    fetched_ref = RepoRef(**{**fetched.ref.to_dict(), "size_kb": size_kb, "main_language": language})
    result.reason = rejection_reason(fetched_ref, selection, frozenset())
    if result.reason is not None:
        result.selected = False
        files = []
    result.n_files = len(files)
    result.n_bytes = sum(f.size_bytes for f in files)
    if files:
        table = extract.files_table(files, repo_stars=fetched_ref.stars, repo_language=language)
        storage.write_table(table.cast(FILES_SCHEMA), part_uri(out, CRAWL_FILES, key))
    if skips:
        storage.write_table(skipped_table(skips), part_uri(out, CRAWL_SKIPPED, key))
    storage.write_table(repos_row(fetched_ref, fetched.commit, result, size_kb, language, config_hash),
                        part_uri(out, CRAWL_REPOS, key))
    return result
