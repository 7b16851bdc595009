"""Hostile tar headers (long-name and pax bombs) are refused before they are read: checked in a
subprocess whose memory is limited."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

PY_SOURCE = b"def add(a, b):\n    return a + b\n"


# --- decoding ---------------------------------------------------------------------------------------


# --- tables ---------------------------------------------------------------------------------------


# --- main language --------------------------------------------------------------------------------


# --- hostile tar headers, damaged tars, hostile zips (issue 10 items 2, 4, 8) ---------------------------

def tar_header(name: str, kind: bytes, size: int, fmt=tarfile.GNU_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=fmt)


def tar_member(name: str, data: bytes) -> bytes:
    return tar_header(name, tarfile.REGTYPE, len(data), tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)


END_OF_ARCHIVE = bytes(1024)
BOMB_BYTES = 512 << 20


def write_header_bomb(path: Path, kind: bytes) -> Path:
    """A .tar.gz of about 2 MB whose first header declares 512 MiB of extended header data."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(tar_header("././@LongLink" if kind == tarfile.GNUTYPE_LONGNAME else "pax", kind, BOMB_BYTES))
        chunk = b"a" * (1 << 20)
        for _ in range(BOMB_BYTES // len(chunk)):
            f.write(chunk)
        f.write(tar_member("after.py", PY_SOURCE) + END_OF_ARCHIVE)
    assert path.stat().st_size < 4 << 20
    return path


def extract_in_subprocess(archive: Path, timeout_s: float = 120) -> dict:
    """Records of the archive and how much the extracting process's peak memory grew, measured in a
    process of its own (the peak RSS of this one is whatever earlier tests left)."""
    code = (
        "import json, resource, sys\n"
        "from codemill.crawl.extract import iter_repo_files\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "records = [[r.path, getattr(r, 'reason', 'kept')] for r in iter_repo_files(sys.argv[1], 'o/bomb')]\n"
        "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base\n"
        "print(json.dumps({'records': records, 'grew_mib': grew / 1024}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(archive)], capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE])
def test_extended_header_bombs_are_refused_before_they_are_read(tmp_path, kind):
    """A 2 MB .tar.gz declaring a 512 MiB long-name or pax header cost gigabytes (tarfile reads it whole)."""
    archive = write_header_bomb(tmp_path / "bomb.tar.gz", kind)
    result = extract_in_subprocess(archive)
    assert result["records"] == [["", "archive_error"]]
    assert result["grew_mib"] < 32, result
