"""Repository keys and names that are safe to use as file names.

A repository's outputs (`files/<key>.parquet`, ...) and its scratch folder are named by its key, a hash
of its lower-cased name (GitHub names are case-insensitive), never by the name itself: a name comes from
a URL or a listing anyone can write, and `..` or a separator in it would point outside the folder meant.
"""

from __future__ import annotations

import hashlib
import os
import shutil

KEY_CHARS = 20
# Parts a repository name may never have: they move a path out of the folder it is joined to.
_UNSAFE_PARTS = frozenset({"", ".", ".."})


def repo_key(full_name: str) -> str:
    return hashlib.sha1(full_name.lower().encode()).hexdigest()[:KEY_CHARS]


def unsafe_name_reason(full_name: str) -> str | None:
    """Why `full_name` cannot name a repository (None when it can): every `/`-separated part must be a
    plain name, not empty, `.` or `..`, without backslashes or NUL bytes."""
    if "\\" in full_name or "\x00" in full_name:
        return "contains a backslash or a NUL byte"
    if any(part in _UNSAFE_PARTS for part in full_name.split("/")):
        return "has an empty, '.' or '..' part"
    return None


def remove_inside(path: str, root: str) -> None:
    """Remove `path` (a folder or a file) only when its real location lies strictly inside `root`'s:
    a scratch folder's clean-up must never reach the folder that holds it, or anything else."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real, real_root]) != real_root or real == real_root:
        raise ValueError(f"refusing to remove {path}: it is not inside {root}")
    if os.path.islink(path) or not os.path.isdir(path):
        os.remove(path)
    else:
        shutil.rmtree(path)
