"""The crawl's output layout, per repository: which parts exist, which are complete, removing them.

A repository with key K (`codemill.crawl.keys.repo_key`) owns `files/K.parquet`, `skipped/K.parquet` and
`repos/K.parquet`; the last is its completion marker, written after the others. A marker records the hash
of what its outputs depend on (`repo_config_hash`: the selection rules applied after the fetch, the
extraction settings, the source and location it came from), so a rerun under other settings redoes the
repository instead of keeping outputs made under the old ones. Readers downstream use
`complete_file_parts`: only the files of repositories with a marker that says they were selected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq

from codemill import storage
from codemill.crawl.sources.base import RepoRef
from codemill.secrets import redact_url
from codemill.stages import CRAWL_FILES, CRAWL_REPOS, CRAWL_SKIPPED

log = logging.getLogger("codemill.crawl")

PARTS = (CRAWL_REPOS, CRAWL_FILES, CRAWL_SKIPPED)  # the marker first: removing it first un-completes a repository
SELECTION_PART = "_selection.parquet"  # skipped/ entry of the whole run: repositories refused by selection
# Bumped when what a marker vouches for changes meaning, so markers of older code are redone.
MARKER_FORMAT = 2
# Selection keys applied when listing only (refused repositories are removed by the run that refuses
# them); a change to them does not redo repositories that are still kept.
_LISTING_ONLY_SELECTION = ("exclude", "exclude_file")
# Markers read at once by a resuming crawl or a downstream reader (I/O-bound: threads, not cores).
MARKER_READERS = 32


def repo_config_hash(config, ref: RepoRef) -> str:
    """What a repository's outputs depend on, hashed: selection rules applied after the fetch, extraction
    settings, and the repository's identity (source and location, credentials removed)."""
    selection = config.selection.model_dump(mode="json", exclude=set(_LISTING_ONLY_SELECTION))
    identity = {"format": MARKER_FORMAT, "selection": selection, "extract": config.extract.model_dump(mode="json"),
                "source": ref.source, "location": redact_url(ref.location)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def part_uri(out: str, part: str, key: str) -> str:
    return storage.join(out, part, f"{key}.parquet")


def part_keys(out: str, part: str) -> set[str]:
    """Keys with a part under `part/` (the run-wide `_selection.parquet` is no repository's)."""
    names = (posixpath.basename(f) for f in storage.list_files(storage.join(out, part), ".parquet"))
    return {n.removesuffix(".parquet") for n in names if n != SELECTION_PART}


def remove_parts(out: str, key: str) -> None:
    """Remove every part of one repository, its marker first."""
    for part in PARTS:
        storage.delete_file(part_uri(out, part, key))


def read_marker(uri: str) -> dict | None:
    """A marker's row (full_name, selected, config_hash, ...), or None when it is unreadable or of an
    older format (no config_hash): such a repository is not complete."""
    fs, path = storage.filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            rows = pq.read_table(f).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        log.warning("crawl: %s is unreadable (%s); its repository counts as not done", uri, exc)
        return None
    if len(rows) != 1 or not rows[0].get("config_hash"):
        return None
    return rows[0]


def read_markers(out: str) -> dict[str, dict]:
    """key -> marker row, for every readable marker under `out`. Markers are many small files (one per
    repository), so they are read MARKER_READERS at a time: on S3 each read is a round trip."""
    keys = sorted(part_keys(out, CRAWL_REPOS))
    with ThreadPoolExecutor(MARKER_READERS) as pool:
        rows = pool.map(lambda key: read_marker(part_uri(out, CRAWL_REPOS, key)), keys)
        return {key: row for key, row in zip(keys, rows) if row is not None}


def complete_file_parts(crawl_out_uri: str) -> list[str]:
    """The `files/` parts that downstream stages read: those of repositories whose completion marker is
    valid and says they were selected. A part left by a run that was killed, or by a repository whose
    redo was rejected or failed, is never among them."""
    markers = read_markers(crawl_out_uri)
    have = part_keys(crawl_out_uri, CRAWL_FILES)
    return [part_uri(crawl_out_uri, CRAWL_FILES, key) for key in sorted(have)
            if key in markers and markers[key].get("selected")]
