"""A tiny corpus of local "repositories" of real-looking code, long enough for the filter's size rule: the
input of the DAG tests that crawl a local folder."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

CODE = textwrap.dedent('''
    """A small module of real-looking code, long enough for the size rule."""
    import os


    def walk_tree(root):
        """Yield every file below root, sorted, skipping hidden folders."""
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                yield os.path.join(folder, name)
    ''') * 8


def make_corpus(root: Path, repos: int | Sequence[str] = 2, *, second_module: bool = False,
                rejected_files: bool = False) -> Path:
    """One folder per repository (`repos`: a count, named repo000.., or the names), each with walk.py (CODE
    with a comment naming the repository, so no two files are exact copies). `second_module` adds other.py, a
    near copy under another function name; `rejected_files` adds a file too small for the filter and a binary
    one."""
    names = [f"repo{i:03d}" for i in range(repos)] if isinstance(repos, int) else list(repos)
    for i, name in enumerate(names):
        pkg = root / name
        pkg.mkdir(parents=True)
        (pkg / "walk.py").write_text(CODE + f"\n# {name if not isinstance(repos, int) else i}\n")
        if second_module:
            (pkg / "other.py").write_text(CODE.replace("walk_tree", f"walk_tree_{i}"))
        if rejected_files:
            (pkg / "tiny.py").write_text("x = 1\n")
            (pkg / "blob.bin").write_bytes(b"\x00\x01" * 100)
    return root
