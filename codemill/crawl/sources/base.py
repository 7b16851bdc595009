"""The contract every repository source honours.

A source enumerates `RepoRef`s on the driver (cheap: metadata only) and fetches one repository at a time
on a worker into a local folder or archive (`FetchedRepo`). Extraction into files is the same for all
sources (`codemill.crawl.extract`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass
class RepoRef:
    full_name: str                 # "owner/name"; unique within a crawl
    source: str                    # "github" | "git" | "local"
    location: str                  # API tarball URL, clone URL, or local path
    stars: int | None = None
    size_kb: int | None = None     # GitHub's `size` field is in KB
    main_language: str | None = None
    license: str | None = None
    default_branch: str | None = None
    # Set when the source could list the repository but not describe it (e.g. its folder cannot be
    # measured): the crawl records it as failed with this reason instead of stopping.
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FetchedRepo:
    ref: RepoRef
    path: str                      # a local folder, or a .tar.gz/.tgz/.zip archive
    commit: str | None = None      # the commit fetched, where the source knows it
    files_only: bool = False       # only the files directly in the folder (its subfolders are other repositories)


class RepoSource(Protocol):
    def list_repos(self) -> Iterator[RepoRef]:
        """Every candidate repository (before codemill's own selection)."""

    def fetch(self, ref: RepoRef, workdir: str) -> FetchedRepo:
        """Download or locate one repository under `workdir`; raises `FetchError` with a reason."""


class FetchError(RuntimeError):
    """A repository that could not be fetched; the message is recorded as the skip reason."""
