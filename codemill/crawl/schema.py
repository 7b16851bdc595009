"""The Parquet schemas of the crawl's outputs, and the document id that follows a file from crawl to tokenize."""

from __future__ import annotations

import hashlib

import pyarrow as pa

REPOS_SCHEMA = pa.schema([
    ("full_name", pa.string()), ("stars", pa.int64()), ("size_kb", pa.int64()),
    ("main_language", pa.string()), ("license", pa.string()), ("default_branch", pa.string()),
    ("commit", pa.string()), ("source", pa.string()), ("fetched_at", pa.timestamp("s", tz="UTC")),
    ("n_files", pa.int64()), ("n_skipped", pa.int64()),
    # Repositories dropped by selection once fetched (a local repository's size, say) are listed too,
    # so the crawl's record of what it looked at is complete.
    ("selected", pa.bool_()), ("reject_reason", pa.string()),
    # What the outputs were made under (codemill.crawl.outputs.repo_config_hash): a rerun under other
    # settings redoes the repository.
    ("config_hash", pa.string()),
])

FILES_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("repo", pa.string()), ("path", pa.string()), ("ext", pa.string()),
    ("content", pa.large_string()), ("size_bytes", pa.int64()), ("sha256", pa.string()),
    ("encoding", pa.string()), ("repo_stars", pa.int64()), ("repo_language", pa.string()),
])

SKIPPED_SCHEMA = pa.schema([("repo", pa.string()), ("path", pa.string()), ("reason", pa.string())])


def make_doc_id(repo: str, path: str, sha256: str) -> str:
    """Stable across runs and hosts: the same file of the same repository always gets the same id."""
    return hashlib.sha256(f"{repo}\x00{path}\x00{sha256}".encode()).hexdigest()[:32]
