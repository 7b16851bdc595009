"""A fetched repository (a folder, or a tar or zip archive) into file records, read safely in memory.

Nothing is ever written to disk: archives are read member by member (tar as a stream, zip through its
central directory) and folders file by file. Every member that is not kept is recorded with a reason
(`SkippedFile`), never dropped silently:

- `absolute_path`, `path_traversal`: a name that is absolute (`/x`, `C:/x`) or has a `..` component.
  Backslashes count as separators, so `..\\x` is caught too.
- `symlink`, `hardlink`, `special_file` (character or block device, fifo, socket): never followed or read.
- `excluded_dir`: one record per excluded folder (`.git/`, `node_modules/`, vendored code, ...), not
  one per file inside it. Folders are matched by name at any depth *below the repository root*, never
  above it: a site-packages child crawled as its own repository keeps its files.
- `file_size_cap`: a file larger than `max_file_bytes`; its size is checked before it is read, and the
  read is bounded anyway (an archive may lie about sizes, a file may grow).
- `repo_size_cap`, `member_count_cap`: the repository holds more than `max_repo_bytes`, or more than
  `max_members` members; the member that passes the cap is recorded and nothing after it is read. The
  byte count is what the extractor passes over: a tar stream decompresses every member, so every byte
  of it counts (headers, extended headers and data of every member type, excluded ones included); a
  zip counts every member's uncompressed size; a folder walk counts regular files and never enters
  excluded folders. A zip whose end record announces more than `max_members` entries is refused before
  its central directory is read.
- `duplicate_path`: an archive holding the same path twice keeps the first.
- `path_encoding`: a name that is not valid UTF-8 (recorded with the odd bytes escaped, `\\udce9`).
- `binary`, `decode`: see `codemill.crawl.decode`.
- `encrypted`, `read_error`: a member that cannot be read.
- `archive_error`: an archive that is damaged from that member on (a bad checksum, a garbage or
  oversized header, cut short: a tar must reach its end-of-archive block, see `codemill.crawl.tarstream`),
  or a folder that cannot be opened; the record names the last member read, or "" when nothing could be
  read, and it is the last record. The crawl fails such a repository rather than keep part of it.

Archive paths drop one top-level folder when every member (read within the caps) sits inside it, as in
GitHub's tarballs (`owner-repo-sha/src/x.py` -> `src/x.py`). A folder's paths are relative to the
folder itself.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import BinaryIO

import pyarrow as pa
from pydantic import Field, StrictInt, field_validator

from codemill.config import StrictModel
from codemill.crawl import tarstream, walk
from codemill.crawl.decode import NotText, decode_text
from codemill.crawl.schema import FILES_SCHEMA, SKIPPED_SCHEMA, make_doc_id

MiB = 1024 * 1024
# A bit above the filter's 100 KB maximum (SPEC §1), so the filter records its own size rejections
# and the crawl only guards memory.
DEFAULT_MAX_FILE_BYTES = 1 * MiB
# Selected repositories are at most 10 MB on GitHub's compressed measure (SPEC §1), and source code
# compresses 4-10x, so a selected checkout rarely passes 100 MiB uncompressed; the cap leaves room for
# that while bounding a worker's memory and the work a decompression bomb can cause.
DEFAULT_MAX_REPO_BYTES = 200 * MiB
# Far above the few thousand files of a repository of 10 MB; bounds archives of millions of empty entries.
DEFAULT_MAX_MEMBERS = 100_000
DEFAULT_EXCLUDED_DIRS = (
    ".git", ".hg", ".svn", ".bzr",                                # version control
    "node_modules", "bower_components", "jspm_packages",           # JavaScript dependencies
    "vendor", "third_party", "third-party", "thirdparty",          # vendored code
    "__pycache__", ".tox", ".nox", ".venv", "venv", "site-packages", ".eggs",  # Python environments
    ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints",          # tool caches
)

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

SKIP_ABSOLUTE = "absolute_path"
SKIP_TRAVERSAL = "path_traversal"
SKIP_SYMLINK = "symlink"
SKIP_HARDLINK = "hardlink"
SKIP_SPECIAL = "special_file"
SKIP_EXCLUDED_DIR = "excluded_dir"
SKIP_FILE_SIZE = "file_size_cap"
SKIP_REPO_SIZE = "repo_size_cap"
SKIP_MEMBER_COUNT = "member_count_cap"
SKIP_DUPLICATE = "duplicate_path"
SKIP_PATH_ENCODING = "path_encoding"
SKIP_ENCRYPTED = "encrypted"
SKIP_READ_ERROR = "read_error"
SKIP_ARCHIVE_ERROR = "archive_error"

_GZIP_MAGIC, _BZIP2_MAGIC, _XZ_MAGIC = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError)


class ExtractLimits(StrictModel):
    max_file_bytes: StrictInt = Field(DEFAULT_MAX_FILE_BYTES, gt=0)
    max_repo_bytes: StrictInt = Field(DEFAULT_MAX_REPO_BYTES, gt=0)
    max_members: StrictInt = Field(DEFAULT_MAX_MEMBERS, gt=0)
    excluded_dirs: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDED_DIRS))  # any case

    @field_validator("excluded_dirs")
    @classmethod
    def _folder_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or "/" in name or "\\" in name:
                raise ValueError(f"{name!r}: give folder names (e.g. node_modules), not paths")
        return names


@dataclass(frozen=True)
class RepoFile:
    repo: str
    path: str
    content: str
    size_bytes: int        # as stored, before decoding
    sha256: str            # of the stored bytes
    encoding: str
    ext: str = field(init=False)
    doc_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ext", PurePosixPath(self.path).suffix.lower())
        object.__setattr__(self, "doc_id", make_doc_id(self.repo, self.path, self.sha256))


@dataclass(frozen=True)
class SkippedFile:
    repo: str
    path: str
    reason: str


@dataclass
class RepoExtraction:
    files: list[RepoFile]
    skipped: list[SkippedFile]


def is_archive(path: str) -> bool:
    return path.lower().endswith(ARCHIVE_SUFFIXES)


# --- members of a container -----------------------------------------------------------------------

FILE, DIR, SYMLINK, HARDLINK, SPECIAL, UNREADABLE = "file", "dir", "symlink", "hardlink", "special", "unreadable"
_KIND_SKIP = {SYMLINK: SKIP_SYMLINK, HARDLINK: SKIP_HARDLINK, SPECIAL: SKIP_SPECIAL, UNREADABLE: SKIP_READ_ERROR}


@dataclass
class _Member:
    name: str                                   # as the container spells it
    kind: str
    size: int                                   # declared size of a regular file
    read: Callable[[int], bytes] | None = None  # read at most n bytes (regular files)
    encrypted: bool = False
    stored: int | None = None                   # bytes counted toward max_repo_bytes (default: size)


class _TooManyMembers(Exception):
    """A container that announces more members than the cap, refused before they are listed."""


def _open_decompressed(path: str) -> BinaryIO:
    """The tar stream inside a (possibly compressed) file, found by magic bytes. These readers
    decompress at most what each read asks for; tarfile's own stream mode decompresses whole input
    blocks at once, which a highly compressed member turns into tens of MiB."""
    with open(path, "rb") as f:
        magic = f.read(len(_XZ_MAGIC))
    for prefix, opener in ((_GZIP_MAGIC, gzip.open), (_BZIP2_MAGIC, bz2.open), (_XZ_MAGIC, lzma.open)):
        if magic.startswith(prefix):
            return opener(path, "rb")
    return open(path, "rb")


def _tar_members(path: str) -> Iterator[_Member]:
    kinds = {tarstream.DIRECTORY: DIR, tarstream.SYMLINK: SYMLINK, tarstream.HARDLINK: HARDLINK}
    with _open_decompressed(path) as raw:  # a stream, in order
        reader = tarstream.TarReader(raw)
        for entry in reader:
            kind = FILE if entry.is_regular else kinds.get(entry.type, SPECIAL)
            yield _Member(entry.name, kind, entry.size, reader.read if kind == FILE else None,
                          stored=entry.stored_bytes)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix attributes, when present
    if info.is_dir() or stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        return SPECIAL
    return FILE


# The end-of-central-directory record (22 bytes, then a comment of at most 64 KiB), and its zip64 forms.
_EOCD, _EOCD64_LOCATOR, _EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
_EOCD_SIZE, _MAX_COMMENT = 22, 0xFFFF
# Central directory entries are ~100 bytes in real zips (46 fixed, a name, a few extra fields); a
# directory averaging more than this per announced entry hides entries its end record does not count.
_MAX_CD_BYTES_PER_ENTRY = 4096


def zip_directory_size(path: str) -> tuple[int, int]:
    """(entries, central directory bytes) as the end record announces them, read from the file's tail
    without parsing the central directory; zipfile.BadZipFile when there is no end record."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        tail_start = max(0, size - _EOCD_SIZE - _MAX_COMMENT)
        f.seek(tail_start)
        tail = f.read()
        pos = tail.rfind(_EOCD)
        if pos < 0 or len(tail) - pos < _EOCD_SIZE:
            raise zipfile.BadZipFile("no end-of-central-directory record")
        record = tail[pos:pos + _EOCD_SIZE]
        entries = max(int.from_bytes(record[8:10], "little"), int.from_bytes(record[10:12], "little"))
        cd_bytes = int.from_bytes(record[12:16], "little")
        locator = tail[pos - 20:pos] if pos >= 20 else b""
        if locator[:4] == _EOCD64_LOCATOR:  # zip64: the counts live in the zip64 end record
            f.seek(int.from_bytes(locator[8:16], "little"))
            record64 = f.read(56)
            if record64[:4] != _EOCD64 or len(record64) < 56:
                raise zipfile.BadZipFile("a zip64 locator that points at no zip64 end record")
            entries = max(int.from_bytes(record64[24:32], "little"), int.from_bytes(record64[32:40], "little"))
            cd_bytes = int.from_bytes(record64[40:48], "little")
    return entries, cd_bytes


def _zip_members(path: str, max_members: int) -> Iterator[_Member]:
    entries, cd_bytes = zip_directory_size(path)
    if entries > max_members or cd_bytes > max(entries, 1) * _MAX_CD_BYTES_PER_ENTRY:
        raise _TooManyMembers()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            def read(n: int, info: zipfile.ZipInfo = info) -> bytes:
                with zf.open(info) as f:
                    return f.read(n)
            yield _Member(info.filename, _zip_kind(info), info.file_size, read, encrypted=bool(info.flag_bits & 0x1))


def _folder_members(root: str, excluded: frozenset[str], descend: bool = True) -> Iterator[_Member]:
    """Entries in name order, depth first, through directory descriptors and without following links
    (`codemill.crawl.walk`); excluded folders are listed but not entered. Not descending, only the folder's
    own files are members: its folders and archives are repositories of their own.
    An unreadable subfolder is a member of its own; an unreadable root raises."""
    kinds = {walk.FILE: FILE, walk.DIR: DIR, walk.SYMLINK: SYMLINK, walk.SPECIAL: SPECIAL,
             walk.UNREADABLE: UNREADABLE}
    for entry in walk.walk(root, lambda path, name: descend and name.casefold() not in excluded):
        if not descend and (entry.kind == walk.DIR or (entry.kind == walk.FILE and is_archive(entry.path))):
            continue
        yield _Member(entry.path, kinds[entry.kind], entry.size, entry.read)


# --- paths ----------------------------------------------------------------------------------------

def _printable(name: str) -> str:
    """A name as it can be stored: bytes that were not UTF-8 (kept by Python as surrogates) escaped."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _normalize(name: str) -> tuple[str | None, str | None]:
    """(relative POSIX path, None) for a safe member name, or (None, skip reason)."""
    if _printable(name) != name:
        return None, SKIP_PATH_ENCODING
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) >= 2 and unified[1] == ":" and unified[0].isalpha()):
        return None, SKIP_ABSOLUTE
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, SKIP_TRAVERSAL
    return "/".join(parts), None


# --- extraction -----------------------------------------------------------------------------------

def iter_repo_files(path: str, repo_full_name: str, limits: ExtractLimits | None = None,
                    files_only: bool = False) -> Iterator[RepoFile | SkippedFile]:
    """Every file of the repository at `path` (folder or archive), kept or skipped with a reason.

    A folder's records stream out as its files are read. An archive is read whole (within the caps)
    before its records come out, because whether its top folder is dropped is only known at its end:
    one pass assumes the first member's top folder is common to all, and in the rare archive where a
    member proves otherwise, a second pass reads it again without dropping anything. `files_only`: a folder's
    files directly in it, its subfolders not entered (they are other repositories)."""
    limits = limits or ExtractLimits()
    excluded = frozenset(d.casefold() for d in limits.excluded_dirs)
    lower = path.lower()
    if lower.endswith(TAR_SUFFIXES):
        open_members: Callable[[], Iterator[_Member]] = lambda: _tar_members(path)  # noqa: E731
    elif lower.endswith(ZIP_SUFFIXES):
        open_members = lambda: _zip_members(path, limits.max_members)  # noqa: E731
    elif os.path.isdir(path):
        yield from _extract(_folder_members(path, excluded, descend=not files_only),
                            _Extractor(repo_full_name, limits, excluded))
        return
    else:
        raise ValueError(f"{path}: neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    extractor = _Extractor(repo_full_name, limits, excluded, drop_top_folder=True)
    records = list(_extract(open_members(), extractor))
    if extractor.top_folder_disproved:
        records = list(_extract(open_members(), _Extractor(repo_full_name, limits, excluded)))
    yield from records


def _extract(members: Iterator[_Member], extractor: _Extractor) -> Iterator[RepoFile | SkippedFile]:
    current = ""
    try:
        for member in members:
            current = member.name
            records, stop = extractor.visit(member)
            yield from records
            if stop:
                break
    except _TooManyMembers:
        yield extractor.skip(current, SKIP_MEMBER_COUNT)
    except _ARCHIVE_ERRORS:
        yield extractor.skip(current, SKIP_ARCHIVE_ERROR)
    finally:
        members.close()


def extract_repo(path: str, repo_full_name: str, limits: ExtractLimits | None = None,
                 files_only: bool = False) -> RepoExtraction:
    result = RepoExtraction([], [])
    for record in iter_repo_files(path, repo_full_name, limits, files_only):
        (result.files if isinstance(record, RepoFile) else result.skipped).append(record)
    return result


class _Extractor:
    """The per-member rules, with the state they need (totals, paths seen, excluded folders recorded)."""

    def __init__(self, repo: str, limits: ExtractLimits, excluded: frozenset[str], drop_top_folder: bool = False):
        self.repo, self.limits, self.excluded = repo, limits, excluded
        self.drop_top_folder = drop_top_folder
        self.top_folder: str | None = None       # the first member's top folder, assumed common to all
        self.top_folder_disproved = False
        self.members = 0
        self.total_bytes = 0
        self.seen_paths: set[str] = set()
        self.excluded_recorded: set[str] = set()

    def skip(self, path: str, reason: str) -> SkippedFile:
        return SkippedFile(self.repo, _printable(path), reason)

    def visit(self, member: _Member) -> tuple[list[RepoFile | SkippedFile], bool]:
        """The records for one member, and whether to stop reading the container."""
        self.members += 1
        if self.members > self.limits.max_members:
            return [self.skip(member.name, SKIP_MEMBER_COUNT)], True
        self.total_bytes += member.size if member.stored is None else member.stored
        if self.total_bytes > self.limits.max_repo_bytes:
            return [self.skip(member.name, SKIP_REPO_SIZE)], True
        path, unsafe = _normalize(member.name)
        if unsafe:
            return [self.skip(member.name, unsafe)], False
        if not path:
            return [], False
        if self.drop_top_folder:
            if not self._in_top_folder(path, member.kind):
                self.top_folder_disproved = True
                return [], True
            path = path[len(self.top_folder) + 1:]
            if not path:
                return [], False
        folder = self._excluded_folder(path, member.kind)
        if folder is not None:
            if folder in self.excluded_recorded:
                return [], False
            self.excluded_recorded.add(folder)
            return [self.skip(folder + "/", SKIP_EXCLUDED_DIR)], False
        if member.kind == DIR:
            return [], False
        if member.kind in _KIND_SKIP:
            return [self.skip(path, _KIND_SKIP[member.kind])], False
        return [self._read_file(member, path)], False

    def _in_top_folder(self, path: str, kind: str) -> bool:
        if self.top_folder is None:
            head, sep, _ = path.partition("/")
            if not sep and kind != DIR:
                return False
            self.top_folder = head
        return path.startswith(self.top_folder + "/") or (path == self.top_folder and kind == DIR)

    def _excluded_folder(self, path: str, kind: str) -> str | None:
        parts = path.split("/")
        folders = parts if kind == DIR else parts[:-1]
        for i, part in enumerate(folders):
            if part.casefold() in self.excluded:
                return "/".join(parts[: i + 1])
        return None

    def _read_file(self, member: _Member, path: str) -> RepoFile | SkippedFile:
        if path in self.seen_paths:
            return self.skip(path, SKIP_DUPLICATE)
        self.seen_paths.add(path)
        cap = self.limits.max_file_bytes
        if member.size > cap:
            return self.skip(path, SKIP_FILE_SIZE)
        if member.encrypted:
            return self.skip(path, SKIP_ENCRYPTED)
        try:
            data = member.read(cap + 1)
        except walk.NotRegular as exc:  # a folder's file that changed under us
            return self.skip(path, _KIND_SKIP[SYMLINK if exc.kind == walk.SYMLINK else SPECIAL])
        except (*_ARCHIVE_ERRORS, RuntimeError, NotImplementedError):
            return self.skip(path, SKIP_READ_ERROR)
        if len(data) > cap:
            return self.skip(path, SKIP_FILE_SIZE)
        try:
            text, encoding = decode_text(data)
        except NotText as exc:
            return self.skip(path, exc.reason)
        return RepoFile(self.repo, path, text, len(data), hashlib.sha256(data).hexdigest(), encoding)


# --- Arrow tables ---------------------------------------------------------------------------------

def files_table(files: Iterable[RepoFile], repo_stars: int | None, repo_language: str | None) -> pa.Table:
    """The `files/` rows of one repository; stars and main language are the repository's, from the caller."""
    files = list(files)
    n = len(files)
    return pa.table({
        "doc_id": [f.doc_id for f in files], "repo": [f.repo for f in files], "path": [f.path for f in files],
        "ext": [f.ext for f in files], "content": [f.content for f in files],
        "size_bytes": [f.size_bytes for f in files], "sha256": [f.sha256 for f in files],
        "encoding": [f.encoding for f in files], "repo_stars": [repo_stars] * n,
        "repo_language": [repo_language] * n,
    }, schema=FILES_SCHEMA)


def skipped_table(skipped: Iterable[SkippedFile]) -> pa.Table:
    skipped = list(skipped)
    return pa.table({"repo": [s.repo for s in skipped], "path": [s.path for s in skipped],
                     "reason": [s.reason for s in skipped]}, schema=SKIPPED_SCHEMA)
