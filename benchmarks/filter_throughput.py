"""Filter + language identification throughput, per core: codemill's vectorised rules on Arrow batches
against a straightforward per-file Python implementation of the same rules, in one run, on real code
(the text files of a Python environment's site-packages). Asserts that both take the same decision
(kept, or the same reason) on every file, then prints and writes the figures.

    .venv/bin/python benchmarks/filter_throughput.py --limit-mb 200 --out benchmarks/results/filter_throughput.json
    .venv/bin/python benchmarks/filter_throughput.py --smoke    # 1 MB, one run: the script still works
"""

from __future__ import annotations

import os

# One core: no thread pools behind numpy or Arrow (set before they are imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import collections
import fnmatch
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

import pyarrow as pa
from bench_env import results_path
from machine import cpu_model  # benchmarks/machine.py, beside this script

from codemill.crawl.schema import FILES_SCHEMA, make_doc_id
from codemill.filter import pep8, rules
from codemill.filter.autogen import markers_regex
from codemill.filter.config import FilterConfig
from codemill.filter.langid import language_of
from codemill.languages import EXTENSION_TO_LANGUAGE

DEFAULT_ROOT = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
MAX_FILE_BYTES = 1024 * 1024  # a crawl keeps no larger file; bigger ones would be data, not code
SKIPPED_SUFFIXES = {".so", ".pyc", ".a", ".o", ".dll", ".dylib", ".png", ".jpg", ".gif", ".ico", ".whl",
                    ".zip", ".gz", ".bz2", ".xz", ".pdf", ".ttf", ".otf", ".woff", ".woff2", ".bin", ".npy",
                    ".npz", ".pkl", ".mo", ".db"}


class PerFileFilter:
    """The baseline: the same rules, one file at a time, written the obvious way in Python."""

    def __init__(self, config: FilterConfig):
        self.config = config
        ag = config.autogen
        self.marker = re.compile(markers_regex(ag.markers), re.IGNORECASE)
        self.globs = [g.lower() for g in ag.name_globs]

    def autogen(self, content: str, path: str, longest_line: int) -> bool:
        ag = self.config.autogen
        name = path.rsplit("/", 1)[-1].lower()
        if any(fnmatch.fnmatchcase(name, glob) for glob in self.globs):
            return True
        if self.marker.search(content[:ag.head_chars]):
            return True
        return bool(content) and longest_line >= ag.minified_line_chars and \
            longest_line / len(content) >= ag.minified_line_share

    def decide(self, content: str, path: str, ext: str, repo_language: str | None) -> str | None:
        cfg = self.config
        if language_of(ext, repo_language, cfg.languages) is None:
            return "language"
        lines = content.split("\n")
        if content.endswith("\n") or not content:
            lines.pop()  # a final newline ends the last line; an empty file has no line
        line_lengths = [len(line) for line in lines]
        average = sum(line_lengths) / len(lines) if lines else 0.0
        if average > cfg.max_avg_line_length:
            return "avg_line_length"
        if self.autogen(content, path, max(line_lengths, default=0)):
            return "autogen"
        letters = sum(map(str.isalpha, content))
        if (letters / len(content) if content else 0.0) < cfg.min_alpha_ratio:
            return "alpha_ratio"
        size = len(content.encode("utf-8"))
        if size < cfg.min_size_bytes or size > cfg.max_size_bytes:
            return "size"
        return None


def collect(root: Path, limit_bytes: int, seed: int) -> pa.Table:
    """Text files under `root`, sampled at random across the tree up to `limit_bytes`, as a files/ table.
    A top-level folder stands for a repository; its main language is the language with the most bytes."""
    candidates = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.suffix.lower() in SKIPPED_SUFFIXES or path.is_symlink():
                continue
            size = path.stat().st_size
            if 0 < size <= MAX_FILE_BYTES:
                candidates.append(path)
    candidates.sort()
    random.Random(seed).shuffle(candidates)
    rows, total = [], 0
    for path in candidates:
        try:
            content = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\x00" in content:
            continue
        rel = path.relative_to(root)
        repo = rel.parts[0] if len(rel.parts) > 1 else "(top)"
        rows.append((repo, rel.as_posix(), path.suffix.lower(), content))
        total += len(content.encode())
        if total >= limit_bytes:
            break
    lang_bytes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for repo, _, ext, content in rows:
        if ext in EXTENSION_TO_LANGUAGE:
            lang_bytes[repo][EXTENSION_TO_LANGUAGE[ext]] += len(content)
    main_language = {repo: c.most_common(1)[0][0] for repo, c in lang_bytes.items()}
    columns = collections.defaultdict(list)
    for repo, path, ext, content in rows:
        digest = hashlib.sha256(content.encode()).hexdigest()
        for key, value in (("doc_id", make_doc_id(repo, path, digest)), ("repo", repo), ("path", path),
                           ("ext", ext), ("content", content), ("size_bytes", len(content.encode())),
                           ("sha256", digest), ("encoding", "utf-8"), ("repo_stars", 1),
                           ("repo_language", main_language.get(repo))):
            columns[key].append(value)
    return pa.table(columns, schema=FILES_SCHEMA)


def run_vectorised(table: pa.Table, config: FilterConfig) -> tuple[list, float, float]:
    batches = [pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=config.batch_rows)]
    wall, cpu = time.perf_counter(), time.process_time()
    reasons = []
    for batch in batches:
        reasons.extend(rules.decide(batch, config).column("reason").to_pylist())
    return reasons, time.perf_counter() - wall, time.process_time() - cpu


def run_per_file(rows: list[tuple], config: FilterConfig) -> tuple[list, float, float]:
    baseline = PerFileFilter(config)
    wall, cpu = time.perf_counter(), time.process_time()
    reasons = [baseline.decide(*row) for row in rows]
    return reasons, time.perf_counter() - wall, time.process_time() - cpu


def run_pep8(table: pa.Table, reasons: list, config: FilterConfig, limit_bytes: int) -> dict:
    """ruff's formatter on the kept Python files (up to `limit_bytes`), batched as the stage does it:
    the optional step after the rules."""
    sources, total = [], 0
    for content, ext, reason in zip(table.column("content").to_pylist(), table.column("ext").to_pylist(), reasons):
        if reason is None and ext in (".py", ".pyi") and total < limit_bytes:
            sources.append((content, ext == ".pyi"))
            total += len(content.encode())
    cpu, children = time.process_time(), _children_cpu()
    wall = time.perf_counter()
    results = pep8.format_sources([src for src, _ in sources], [stub for _, stub in sources], config.pep8_line_length)
    statuses = collections.Counter(status for _, status in results)
    # ruff runs in a child process: count its CPU time too.
    cpu = time.process_time() - cpu + _children_cpu() - children
    wall = time.perf_counter() - wall
    return {"files": len(sources), "mb": round(total / 1e6, 2), "cpu_s": round(cpu, 2), "wall_s": round(wall, 3),
            "mb_per_cpu_s": round(total / 1e6 / cpu, 3) if cpu else None, "outcomes": dict(statuses)}


def _children_cpu() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of real code to read")
    p.add_argument("--limit-mb", type=float, default=200.0, help="MB of text to read (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each implementation, the fastest kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pep8-mb", type=float, default=2.0,
                   help="MB of kept Python to format with ruff, for its throughput (0: skip)")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/filter_throughput.json")
    p.add_argument("--smoke", action="store_true", help="1 MB, one run, 0.1 MB formatted; a temporary result file")
    args = p.parse_args(argv)
    if args.smoke:
        args.limit_mb, args.repeat, args.pep8_mb = 1.0, 1, 0.1
    args.out = results_path(args.out, "filter_throughput.json", args.smoke)

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    config = FilterConfig()
    table = collect(args.root, int(args.limit_mb * 1e6), args.seed)
    mb = sum(table.column("size_bytes").to_pylist()) / 1e6
    rows = list(zip(*(table.column(c).to_pylist() for c in ("content", "path", "ext", "repo_language"))))
    print(f"{table.num_rows} files, {mb:.1f} MB from {args.root}", flush=True)
    run_vectorised(table, config)  # warm-up pass (first touch of the table's memory), not timed

    fast_times, slow_times = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        fast, wall, cpu = run_vectorised(table, config)
        fast_times.append((wall, cpu))
        slow, wall, cpu = run_per_file(rows, config)
        slow_times.append((wall, cpu))
        mismatches = [(r[1], a, b) for r, a, b in zip(rows, fast, slow) if a != b]
        if mismatches:
            print(f"DECISIONS DIFFER on {len(mismatches)} files, e.g. {mismatches[:5]}", file=sys.stderr)
            return 1
    fast_wall, fast_cpu = (min(t[i] for t in fast_times) for i in (0, 1))
    slow_wall, slow_cpu = (min(t[i] for t in slow_times) for i in (0, 1))
    reasons = collections.Counter(r or "kept" for r in fast)
    result = {
        "files": table.num_rows, "mb": round(mb, 2), "root": str(args.root), "seed": args.seed,
        "repeat": args.repeat, "cpu_model": cpu_model(), "cores_used": 1,
        "vectorised": {"wall_s": round(fast_wall, 3), "cpu_s": round(fast_cpu, 3),
                       "mb_per_cpu_s": round(mb / fast_cpu, 1), "mb_per_wall_s": round(mb / fast_wall, 1)},
        "per_file": {"wall_s": round(slow_wall, 3), "cpu_s": round(slow_cpu, 3),
                     "mb_per_cpu_s": round(mb / slow_cpu, 1), "mb_per_wall_s": round(mb / slow_wall, 1)},
        # CPU time is the per-core figure; wall time also counts waiting for a core on a shared machine.
        "speedup_cpu": round(slow_cpu / fast_cpu, 2),
        "speedup_wall": round(slow_wall / fast_wall, 2),
        "identical_decisions": True,
        "decisions": dict(sorted(reasons.items())),
        "smoke": args.smoke,
    }
    if args.pep8_mb > 0:
        result["pep8_ruff"] = run_pep8(table, fast, config, int(args.pep8_mb * 1e6))
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
