"""Crawl one repository: fetch it, extract its files safely, select it, write its output parts.

Every repository writes its own parts, named by a key derived from its name, and `repos/<key>.parquet`
last: that file is the repository's completion marker. A crawl that was killed therefore resumes by
skipping the keys that have a marker, and a repository redone after a kill overwrites its own parts, so
the output never holds a file twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from codemill import storage
from codemill.crawl import extract
from codemill.crawl.repo_language import bytes_by_extension, main_language
from codemill.crawl.schema import FILES_SCHEMA, REPOS_SCHEMA, SKIPPED_SCHEMA
from codemill.crawl.selection import SelectionConfig, rejection_reason
from codemill.crawl.sources.base import FetchError, RepoRef, RepoSource
from codemill.stages import CRAWL_FILES, CRAWL_REPOS, CRAWL_SKIPPED


def repo_key(full_name: str) -> str:
    return hashlib.sha1(full_name.lower().encode()).hexdigest()[:20]


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
              language: str | None) -> pa.Table:
    row = {
        "full_name": [ref.full_name], "stars": [ref.stars], "size_kb": [size_kb],
        "main_language": [language], "license": [ref.license], "default_branch": [ref.default_branch],
        "commit": [commit], "source": [ref.source],
        "fetched_at": [dt.datetime.now(dt.timezone.utc).replace(microsecond=0)],
        "n_files": [result.n_files], "n_skipped": [sum(result.skipped.values())],
        "selected": [result.selected], "reject_reason": [result.reason],
    }
    return pa.table(row, schema=REPOS_SCHEMA)


def crawl_repo(ref: RepoRef, source: RepoSource, selection: SelectionConfig, limits: extract.ExtractLimits,
               out: str) -> RepoResult:
    """Crawl `ref`; whatever goes wrong with this one repository is recorded, never raised, so one bad
    repository cannot stop a crawl of millions."""
    try:
        return _crawl_repo(ref, source, selection, limits, out)
    except Exception as exc:
        reason = f"error: {type(exc).__name__}: {exc}"
        storage.write_table(skipped_table([(ref.full_name, "", reason)]),
                            storage.join(out, CRAWL_SKIPPED, f"{repo_key(ref.full_name)}.parquet"))
        return RepoResult(ref.full_name, selected=False, reason=reason, failed=True)


def _crawl_repo(ref: RepoRef, source: RepoSource, selection: SelectionConfig, limits: extract.ExtractLimits,
                out: str) -> RepoResult:
    key = repo_key(ref.full_name)
    result = RepoResult(ref.full_name, selected=True)
    with tempfile.TemporaryDirectory(prefix="codemill-crawl-") as workdir:
        try:
            fetched = source.fetch(ref, workdir)
        except FetchError as exc:
            # No completion marker: a later run tries this repository again.
            result.failed, result.selected, result.reason = True, False, f"fetch: {exc}"
            storage.write_table(skipped_table([(ref.full_name, "", result.reason)]),
                                storage.join(out, CRAWL_SKIPPED, f"{key}.parquet"))
            return result
        files, skips = [], []
        for item in extract.iter_repo_files(fetched.path, ref.full_name, limits):
            if isinstance(item, extract.SkippedFile):
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
        storage.write_table(table.cast(FILES_SCHEMA), storage.join(out, CRAWL_FILES, f"{key}.parquet"))
    if skips:
        storage.write_table(skipped_table(skips), storage.join(out, CRAWL_SKIPPED, f"{key}.parquet"))
    storage.write_table(repos_row(fetched_ref, fetched.commit, result, size_kb, language),
                        storage.join(out, CRAWL_REPOS, f"{key}.parquet"))
    return result
