"""Repositories already on disk, for offline runs: folders and archives, each one repository, or each
child of a folder one repository (`expand_children`, e.g. every package of a site-packages).

    source: {type: local, paths: [DIR_OR_ARCHIVE, ...], expand_children: false, loose_files: skip, metadata: FILE}

With `expand_children`, a listed folder's loose files (the single modules of a standard library or a
site-packages: `os.py`, `six.py`) belong to no child; `loose_files: repository` makes them one more
repository, named after the folder, that holds the files directly in it and nothing below.
A repository's full name is `local/<folder name>` (an archive's name without its suffix); a name
met again later in the listing becomes `local/<name>~2`, `~3`, ... in listing order, so the names
(and the doc ids made from them) are the same on every run of the same config.
Stars: a local corpus usually has no star data, so a repository missing from the metadata file gets
`default_stars` (1: the corpus was chosen by hand, so it passes the crawl's stars >= 1 selection;
set it to 0 to let only the repositories the metadata file vouches for through).
Size: from the metadata file, else measured on disk (`repo_info.size_kb_on_disk`).
The paths must be readable from every Ray worker (one node, or a shared filesystem); fetch() hands the
path itself to extraction, nothing is copied.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, StrictBool, StrictInt, field_validator

from codemill.config import StrictModel
from codemill.crawl.extract import ARCHIVE_SUFFIXES, is_archive
from codemill.crawl.sources.base import FetchedRepo, FetchError, RepoRef
from codemill.crawl.sources.repo_info import existing_metadata_file, load_metadata, size_kb_on_disk, unique_names

log = logging.getLogger("codemill")

SOURCE_NAME = "local"
DEFAULT_STARS = 1
# Hidden entries and bytecode caches are never packages of their own.
DEFAULT_CHILD_EXCLUDES = (".*", "__pycache__")
# Appended to a folder's path, the location of its loose files' repository. A path never holds a NUL, so no
# listed folder or archive can be mistaken for it.
LOOSE_FILES_MARK = "\0loose-files"


class LocalSourceConfig(StrictModel):
    type: Literal["local"] = "local"
    paths: list[str] = Field(min_length=1)
    expand_children: StrictBool = False
    # With expand_children: the files directly in a listed folder as one repository, or not crawled.
    loose_files: Literal["skip", "repository"] = "skip"
    include: list[str] = Field(default_factory=list)   # globs on child names; empty: every child
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_CHILD_EXCLUDES))
    metadata: str | None = None
    default_stars: StrictInt = Field(DEFAULT_STARS, ge=0)

    @field_validator("paths")
    @classmethod
    def _paths_are_repositories(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not os.path.exists(path):
                raise ValueError(f"{path} does not exist")
            if not (os.path.isdir(path) or is_archive(path)):
                raise ValueError(f"{path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        return paths

    _metadata_exists = field_validator("metadata")(existing_metadata_file)


def repo_folder_name(path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


class LocalSource:
    def __init__(self, config: LocalSourceConfig):
        self.config = config
        self.metadata = load_metadata(config.metadata)

    def _is_child_repo(self, entry: os.DirEntry) -> bool:
        if self.config.include and not any(fnmatch.fnmatchcase(entry.name, p) for p in self.config.include):
            return False
        if any(fnmatch.fnmatchcase(entry.name, p) for p in self.config.exclude):
            return False
        if entry.is_symlink():
            return False
        return entry.is_dir() or (entry.is_file() and is_archive(entry.name))

    def repo_paths(self) -> list[str]:
        """Locations of the repositories, in listing order (config order; a folder's loose files, then its
        children by name): absolute paths, or a folder's path + LOOSE_FILES_MARK for its loose files."""
        result = []
        for path in self.config.paths:
            path = os.path.abspath(path)
            if self.config.expand_children and os.path.isdir(path):
                with os.scandir(path) as it:
                    children = sorted(it, key=lambda e: e.name)
                chosen = [c.path for c in children if self._is_child_repo(c)]
                loose = [c for c in children if c.is_file(follow_symlinks=False) and not is_archive(c.name)]
                if loose and self.config.loose_files == "repository":
                    result.append(path + LOOSE_FILES_MARK)
                    log.info("local source: the %d loose files of %s are one repository", len(loose), path)
                skipped = len(children) - len(chosen) - (len(loose) if self.config.loose_files == "repository" else 0)
                if skipped:
                    log.info("local source: %d of %d entries of %s are not repositories (filtered by "
                             "include/exclude, or neither a folder nor an archive%s)", skipped, len(children), path,
                             "" if self.config.loose_files == "repository" else "; loose_files: repository crawls "
                             "the files directly in it")
                result.extend(chosen)
            else:
                result.append(path)
        return result

    def list_repos(self) -> Iterator[RepoRef]:
        paths = self.repo_paths()
        names = unique_names([f"{SOURCE_NAME}/{repo_folder_name(p.removesuffix(LOOSE_FILES_MARK))}" for p in paths])
        unused = set(self.metadata) - set(names)
        if unused:
            log.warning("local source: %d metadata entries name no listed repository (e.g. %s)",
                        len(unused), sorted(unused)[0])
        for name, path in zip(names, paths):
            facts = self.metadata.get(name)
            stars = facts.stars if facts and facts.stars is not None else self.config.default_stars
            size_kb, error = facts.size_kb if facts else None, None
            if size_kb is None:
                try:
                    size_kb = (loose_size_kb(path.removesuffix(LOOSE_FILES_MARK)) if path.endswith(LOOSE_FILES_MARK)
                               else size_kb_on_disk(path))
                except OSError as exc:  # this repository fails; the listing goes on
                    error = f"cannot measure {path}: {exc}"
            yield RepoRef(full_name=name, source=SOURCE_NAME, location=path, stars=stars, size_kb=size_kb,
                          main_language=facts.main_language if facts else None,
                          license=facts.license if facts else None,
                          default_branch=facts.default_branch if facts else None, error=error)

    def fetch(self, ref: RepoRef, workdir: str) -> FetchedRepo:
        files_only = ref.location.endswith(LOOSE_FILES_MARK)
        path = ref.location.removesuffix(LOOSE_FILES_MARK)
        if not os.path.exists(path):
            raise FetchError(f"{path} no longer exists")
        return FetchedRepo(ref=ref, path=path, files_only=files_only)


def loose_size_kb(folder: str) -> int:
    """KB (rounded up) of the regular files directly in `folder` but archives (repositories of their own),
    links not followed."""
    with os.scandir(folder) as it:
        total = sum(e.stat(follow_symlinks=False).st_size for e in it
                    if e.is_file(follow_symlinks=False) and not is_archive(e.name))
    return math.ceil(total / 1024)
