"""Repository extraction throughput, one core: codemill's in-memory extraction of GitHub-style tarballs
against the usual way (unpack to disk with tarfile's safe "data" filter, then walk and read the files),
in one run (best of --repeat alternating runs), on real code: the packages of a Python environment's
site-packages, each packed as a repository tarball with one top folder. Both apply the same exclusions,
caps and text decoding; the script asserts they keep the same files (path and sha256), then prints and
writes the figures.

    .venv/bin/python benchmarks/extract_throughput.py --limit-mb 100 \
        --out benchmarks/results/extract_throughput.json
    .venv/bin/python benchmarks/extract_throughput.py --smoke    # 1 MB, one run of each: the script still works
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench_env import results_path
from machine import cpu_model  # benchmarks/machine.py, beside this script

from codemill.crawl.decode import NotText, decode_text
from codemill.crawl.extract import ExtractLimits, extract_repo

DEFAULT_ROOT = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def folder_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def pack_corpus(root: Path, limit_bytes: int, workdir: Path) -> list[tuple[str, Path, int]]:
    """(name, tarball, uncompressed bytes) for packages of `root`, in name order, up to `limit_bytes`."""
    corpus, total = [], 0
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.is_symlink() or child.name.startswith((".", "_")) or "." in child.name:
            continue
        size = folder_bytes(child)
        if total + size > limit_bytes:
            continue
        tarball = workdir / f"{child.name}.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(child, arcname=f"{child.name}-0000000/")
        corpus.append((child.name, tarball, size))
        total += size
    return corpus


def unpack_then_read(tarball: Path, scratch: Path, limits: ExtractLimits) -> set[tuple[str, str]]:
    """The baseline: extract to disk (Python's safe filter), walk, read, decode; returns (path, sha256) kept."""
    target = scratch / tarball.name
    with tarfile.open(tarball, "r:gz") as tar:
        tar.extractall(target, filter="data")
    [top] = list(target.iterdir())
    excluded = {d.casefold() for d in limits.excluded_dirs}
    kept = set()
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d.casefold() not in excluded]
        for name in files:
            path = Path(folder, name)
            if path.is_symlink() or path.stat().st_size > limits.max_file_bytes:
                continue
            data = path.read_bytes()
            try:
                decode_text(data)
            except NotText:
                continue
            kept.add((path.relative_to(top).as_posix(), hashlib.sha256(data).hexdigest()))
    shutil.rmtree(target)
    return kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                   help="a folder whose child folders are packed as repositories")
    p.add_argument("--limit-mb", type=float, default=150.0, help="uncompressed megabytes of packages to pack")
    p.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/extract_throughput.json")
    p.add_argument("--smoke", action="store_true", help="1 MB, one run of each, results to a temporary file")
    args = p.parse_args(argv)
    if args.smoke:
        args.limit_mb, args.repeat = 1.0, 1
    args.out = results_path(args.out, "extract_throughput.json", args.smoke)
    limits = ExtractLimits()
    with tempfile.TemporaryDirectory(prefix="cm-bench-extract-") as tmp:
        work = Path(tmp)
        (work / "tarballs").mkdir()
        (work / "scratch").mkdir()
        corpus = pack_corpus(args.root, int(args.limit_mb * 1e6), work / "tarballs")
        tarball_mb = sum(tarball.stat().st_size for _, tarball, _ in corpus) / 1e6

        ours_s, baseline_s = [], []
        for _ in range(args.repeat):  # alternating, so that load from other processes hits both alike
            start = time.perf_counter()
            ours = {name: extract_repo(str(tarball), name, limits) for name, tarball, _ in corpus}
            ours_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            baseline = {name: unpack_then_read(tarball, work / "scratch", limits) for name, tarball, _ in corpus}
            baseline_s.append(time.perf_counter() - start)
        ours_s, baseline_s = min(ours_s), min(baseline_s)

    for name, result in ours.items():
        assert {(f.path, f.sha256) for f in result.files} == baseline[name], f"{name}: the two disagree"
    n_files = sum(len(r.files) for r in ours.values())
    raw_mb = sum(size for _, _, size in corpus) / 1e6
    result = {
        "corpus": {"root": str(args.root), "repositories": len(corpus), "uncompressed_mb": round(raw_mb, 1),
                   "tarball_mb": round(tarball_mb, 1),
                   "files_kept": n_files, "files_skipped": sum(len(r.skipped) for r in ours.values())},
        "codemill_in_memory": {"seconds": round(ours_s, 2), "mb_per_s": round(raw_mb / ours_s, 1),
                               "files_per_s": round(n_files / ours_s)},
        "baseline_unpack_then_read": {"seconds": round(baseline_s, 2), "mb_per_s": round(raw_mb / baseline_s, 1),
                                      "files_per_s": round(n_files / baseline_s)},
        "speedup": round(baseline_s / ours_s, 2),
        "machine": {"cpu": cpu_model(), "cores_used": 1, "python": platform.python_version()},
        "smoke": args.smoke,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
