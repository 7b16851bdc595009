"""Walking a folder tree nobody vetted: iteratively, through directory file descriptors, never following
a link below the root.

A tree can be thousands of folders deep (recursion would overflow the stack; one descriptor per level
would run out of descriptors), and can change while it is walked: a folder swapped for a symlink after
its parent was listed must not lead outside the tree. So each folder is opened relative to its parent's
descriptor with O_NOFOLLOW | O_DIRECTORY, files are opened relative to their folder's descriptor with
O_NOFOLLOW, only the current folder's descriptor is held open, and the walk returns to a parent through
its `..`, checked to be the same folder (device and inode) it left.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

FILE, DIR, SYMLINK, SPECIAL, UNREADABLE = "file", "dir", "symlink", "special", "unreadable"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotRegular(Exception):
    """What was listed as a regular file is something else when opened (it changed meanwhile)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


@dataclass
class Entry:
    path: str                                        # relative to the root, "/"-separated
    kind: str
    size: int = 0                                    # of a regular file, when listed
    read: Callable[[int], bytes] | None = None       # at most n bytes; valid while the entry is current


@dataclass
class _Level:
    prefix: str
    fd: int | None
    ident: tuple[int, int]
    entries: list[tuple[str, str, int]] = field(default_factory=list)  # (name, kind, size), reversed


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _list(fd: int) -> list[tuple[str, str, int]]:
    """The folder's entries, sorted by name, kinds as listed (links not followed), sizes of files."""
    found = []
    with os.scandir(fd) as it:
        for entry in it:
            try:
                if entry.is_symlink():
                    found.append((entry.name, SYMLINK, 0))
                elif entry.is_dir(follow_symlinks=False):
                    found.append((entry.name, DIR, 0))
                elif entry.is_file(follow_symlinks=False):
                    found.append((entry.name, FILE, entry.stat(follow_symlinks=False).st_size))
                else:
                    found.append((entry.name, SPECIAL, 0))
            except OSError:
                found.append((entry.name, UNREADABLE, 0))
    found.sort(reverse=True)  # popped from the end: name order
    return found


def read_file(name: str, dir_fd: int, n: int) -> bytes:
    """At most n bytes of the regular file `name` in the folder `dir_fd`; NotRegular if it is not one."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegular(SYMLINK) from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotRegular(SPECIAL)
        return f.read(n)


def walk(root: str, enter: Callable[[str, str], bool] = lambda path, name: True) -> Iterator[Entry]:
    """Every entry under `root` in name order, depth first; a folder is entered when `enter(path, name)`.
    A folder that cannot be opened, or became a link, is an entry of kind UNREADABLE or SYMLINK. The root
    itself may be a link (the caller named it); an unreadable root raises OSError."""
    root_fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)
    stack = [_Level("", root_fd, _identity(root_fd))]
    try:
        stack[0].entries = _list(root_fd)
        while stack:
            level = stack[-1]
            if not level.entries:
                _leave(stack)
                continue
            name, kind, size = level.entries.pop()
            path = level.prefix + name
            if kind == FILE:
                fd = level.fd
                yield Entry(path, FILE, size, lambda n, name=name, fd=fd: read_file(name, fd, n))
            elif kind != DIR:
                yield Entry(path, kind)
            elif not enter(path, name):
                yield Entry(path, DIR)
            else:
                child = _open_child(level.fd, name)
                if isinstance(child, str):
                    yield Entry(path, child)
                    continue
                yield Entry(path, DIR)
                try:
                    entries = _list(child)
                except OSError:
                    os.close(child)
                    yield Entry(path, UNREADABLE)
                    continue
                os.close(level.fd)  # one descriptor at a time; the walk comes back through `..`
                level.fd = None
                stack.append(_Level(path + "/", child, _identity(child), entries))
    finally:
        for level in stack:
            if level.fd is not None:
                os.close(level.fd)


def _open_child(parent_fd: int, name: str) -> int | str:
    """The child folder's descriptor, or the kind it turned out to be."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        # ELOOP: a symlink now; ENOTDIR: a file now (O_NOFOLLOW on a symlink can also give ENOTDIR).
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
            except OSError:
                is_link = False
            return SYMLINK if is_link or exc.errno == errno.ELOOP else SPECIAL
        return UNREADABLE


def _leave(stack: list[_Level]) -> None:
    """Back from the current folder to its parent, through `..`, which must be the folder it came from."""
    done = stack.pop()
    try:
        if stack:
            parent = stack[-1]
            fd = os.open("..", _DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=done.fd)
            if _identity(fd) != parent.ident:
                os.close(fd)
                raise OSError(errno.ESTALE, f"{parent.prefix or '.'} was moved while it was walked")
            parent.fd = fd
    finally:
        os.close(done.fd)
        done.fd = None
