"""Speed of the dedup stage.

1. Signatures per second on one core: codemill's batch kernel (`codemill.dedup.minhash.signatures`)
   against datasketch used the plain way (one `MinHash(num_perm=256, seed=1)` per document,
   `update_batch` with that document's shingles), same shingles and parameters, side by side in one
   run on the same documents (real code files), alternating, best of 3. The script checks that both
   give the same signatures. datasketch's time is given with and without making the shingles (its
   users must make them; codemill's kernel does it inside).
2. The whole stage (`python -m codemill.dedup` on a local 2-CPU Ray cluster) on realistic corpora of
   increasing size (default 100k and 1M documents): wall time, phase times, CPU seconds of the driver
   and of every Ray worker (documents per CPU second is the per-core throughput, robust to other load
   on the machine), and the peak memory (RSS and private RssAnon) of every process (driver, each Ray
   worker, raylet, GCS), sampled from /proc every 0.5 s. `--code DIR` runs the stage from another
   checkout (e.g. a worktree of an older commit) on the same corpus, for a side-by-side baseline.

Documents are windows of real code files (site-packages) with a share of their identifiers renamed
per document (so windows of one file are not duplicates of each other), plus exact copies (10%, some
with CRLF line ends) and near copies (10%, 0.2-2% of tokens edited) under other repositories.

    bash scripts/in-netns.sh .venv/bin/python benchmarks/dedup_throughput.py --part signatures
    bash scripts/in-netns.sh .venv/bin/python benchmarks/dedup_throughput.py --part stage --docs 100000 1000000
    bash scripts/in-netns.sh .venv/bin/python benchmarks/dedup_throughput.py --part stage --docs 100000 \
        --code /tmp/old-dedup --out benchmarks/results/dedup_throughput_stage_baseline.json
    bash scripts/in-netns.sh .venv/bin/python benchmarks/dedup_throughput.py --smoke  # both parts, tiny
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import results_path
from dedup_quality import EXTENSION_LANGUAGE, doc_row, edit_tokens, exact_variant, real_code_files, write_filter_output

from codemill.dedup.config import MINHASH_SEED, NUM_PERM, SHINGLE_SIZE
from codemill.dedup.minhash import permutations, signatures
from codemill.dedup.shingles import TOKEN_PATTERN, shingles
from codemill.filter.schema import KEPT_SCHEMA

DOCS_PER_FILE = 50_000
EXACT_SHARE = 0.10
NEAR_SHARE = 0.10
NEAR_EDIT_RATES = (0.002, 0.005, 0.01, 0.02)
RENAMED_IDENTIFIER_SHARE = 0.3
WINDOW_LINES_MEDIAN = 80
SAMPLE_INTERVAL_S = 0.5


# ---------------------------------------------------------------- part 1: signatures per core

def signature_benchmark(n_docs: int, rounds: int) -> dict:
    docs = [text for _, text in real_code_files(500, 50_000, seed=1)[:n_docs]]
    column = pa.array(docs, pa.large_string())
    a, b = permutations(NUM_PERM, MINHASH_SEED)
    signatures(column.slice(0, 8), SHINGLE_SIZE, a, b)  # compile (or load the cached kernel) first

    def codemill_run():
        return np.concatenate([signatures(column.slice(i, 1024), SHINGLE_SIZE, a, b)[0]
                               for i in range(0, len(docs), 1024)])

    def datasketch_run(shingle_sets=None):
        from datasketch import MinHash
        out = np.empty((len(docs), NUM_PERM), np.uint32)
        for i, text in enumerate(docs):
            m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
            m.update_batch(shingle_sets[i] if shingle_sets is not None else shingles(text, SHINGLE_SIZE))
            out[i] = m.hashvalues
        return out

    shingle_sets = [shingles(t, SHINGLE_SIZE) for t in docs]
    times = {"codemill": [], "datasketch": [], "datasketch_given_shingles": []}
    for _ in range(rounds):
        for name, fn in (("codemill", codemill_run), ("datasketch", datasketch_run),
                         ("datasketch_given_shingles", lambda: datasketch_run(shingle_sets))):
            started = time.process_time()
            result = fn()
            times[name].append(time.process_time() - started)
            if name == "codemill":
                ours = result
            elif not np.array_equal(result, ours):
                raise AssertionError(f"{name} signatures differ from codemill's")
    best = {k: min(v) for k, v in times.items()}
    mb = sum(len(d.encode()) for d in docs) / 1e6
    return {"documents": len(docs), "megabytes": round(mb, 1),
            "mean_shingles_per_doc": round(float(np.mean([len(s) for s in shingle_sets])), 1),
            "cpu_seconds_best": {k: round(v, 3) for k, v in best.items()},
            "signatures_per_second_per_core": {k: round(len(docs) / v, 1) for k, v in best.items()},
            "speedup_vs_datasketch": round(best["datasketch"] / best["codemill"], 2),
            "speedup_vs_datasketch_given_shingles": round(best["datasketch_given_shingles"] / best["codemill"], 2),
            "signatures_equal": True}


# ---------------------------------------------------------------- part 2: the whole stage

def _rename_identifiers(text: str, rng: random.Random) -> str:
    names = sorted({t for t in TOKEN_PATTERN.findall(text) if not t[0].isdigit()})
    renamed = {n: f"{n}_{rng.getrandbits(20):x}" for n in rng.sample(names, int(len(names) * RENAMED_IDENTIFIER_SHARE))}
    return TOKEN_PATTERN.sub(lambda m: renamed.get(m.group(0), m.group(0)), text) if renamed else text


def _window(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    length = max(5, int(rng.lognormvariate(math.log(WINDOW_LINES_MEDIAN), 0.8)))
    start = rng.randrange(max(1, len(lines) - length + 1))
    return "".join(lines[start:start + length])


_POOL: list[tuple[str, str]] = []


def _make_chunk(args: tuple[int, str, int]) -> int:
    chunk, out_file, docs_per_file = args
    rng = random.Random(chunk)
    rows: list[dict] = []
    uniques: list[int] = []
    for k in range(docs_per_file):
        draw = rng.random()
        stars = int(rng.lognormvariate(2.0, 2.0))
        if uniques and draw < EXACT_SHARE:
            src = rows[rng.choice(uniques)]
            content = exact_variant(src["content"]) if rng.random() < 0.3 else src["content"]
            rows.append(doc_row(f"copy{chunk}/r{k}", f"vendor/{src['path']}", content, stars))
        elif uniques and draw < EXACT_SHARE + NEAR_SHARE:
            src = rows[rng.choice(uniques)]
            content = edit_tokens(src["content"], rng.choice(NEAR_EDIT_RATES), rng)
            rows.append(doc_row(f"fork{chunk}/r{k}", src["path"], content, stars))
        else:
            path, text = _POOL[rng.randrange(len(_POOL))]
            rows.append(doc_row(f"repo{chunk}/r{k}", path, _rename_identifiers(_window(text, rng), rng), stars))
            uniques.append(len(rows) - 1)
    from codemill import storage
    storage.write_table(pa.Table.from_pylist(rows, schema=KEPT_SCHEMA), out_file)
    return len(rows)


def make_large_corpus(root: Path, n_docs: int, docs_per_file: int = DOCS_PER_FILE) -> Path:
    """root/docs-N: a finished 'filter' output of n_docs documents (chunks are shared between sizes)."""
    global _POOL
    if n_docs % docs_per_file:
        raise ValueError(f"--docs must be a multiple of {docs_per_file}")
    chunks_dir = root / ("chunks" if docs_per_file == DOCS_PER_FILE else f"chunks-{docs_per_file}")
    n_chunks = math.ceil(n_docs / docs_per_file)
    todo = [(c, str(chunks_dir / f"part-{c:05d}.parquet"), docs_per_file) for c in range(n_chunks)
            if not (chunks_dir / f"part-{c:05d}.parquet").exists()]
    if todo:
        _POOL = [(p, t) for p, t in real_code_files(200, 100_000, seed=2) if Path(p).suffix in EXTENSION_LANGUAGE]
        started = time.time()
        with multiprocessing.get_context("fork").Pool(2) as pool:
            made = sum(pool.imap_unordered(_make_chunk, todo))
        print(f"generated {made} documents in {time.time() - started:.0f} s", flush=True)
    inp = root / (f"docs-{n_docs}" if docs_per_file == DOCS_PER_FILE else f"docs-{n_docs}-of-{docs_per_file}")
    if not (inp / "_manifest.json").exists():
        (inp / "kept").mkdir(parents=True, exist_ok=True)
        for c in range(n_chunks):
            link = inp / "kept" / f"part-{c:05d}.parquet"
            if not link.exists():
                os.link(chunks_dir / f"part-{c:05d}.parquet", link)
        write_filter_output(inp, [])
    return inp


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class MemorySampler(threading.Thread):
    """Peak VmRSS and RssAnon (private memory, without the object store's shared pages) and the CPU
    seconds (utime + stime, as last seen) of the driver and of every process of one Ray head, from /proc."""

    def __init__(self, head, driver_pid: int):
        super().__init__(daemon=True)
        self.head, self.driver_pid, self.stop_event = head, driver_pid, threading.Event()
        self.peaks: dict[int, dict] = {}

    def _ours(self, pid_dir: Path) -> str | None:
        pid = int(pid_dir.name)
        cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        if pid == self.driver_pid:
            return "driver (python -m codemill.dedup)"
        sid = int((pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[3])
        if sid != self.head.process.pid and str(self.head.root) not in cmd:
            return None
        if cmd.startswith("ray::"):  # workers retitle themselves after the task or actor they run
            return "ray worker"
        program = Path(cmd.split(" ", 1)[0]).name
        return program if program in ("raylet", "gcs_server") else "other ray process (dashboard, agents)"

    def run(self) -> None:
        while not self.stop_event.is_set():
            for pid_dir in Path("/proc").iterdir():
                if not pid_dir.name.isdigit():
                    continue
                try:
                    role = self._ours(pid_dir)
                    if role is None:
                        continue
                    status = dict(line.split(":", 1) for line in (pid_dir / "status").read_text().splitlines() if ":" in line)
                    rss = int(status["VmRSS"].split()[0]) * 1024
                    anon = int(status.get("RssAnon", "0 kB").split()[0]) * 1024
                    fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
                    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
                except (OSError, ValueError, KeyError, IndexError):
                    continue
                peak = self.peaks.setdefault(int(pid_dir.name), {"role": role, "rss": 0, "anon": 0, "cpu": 0.0})
                peak["cpu"] = max(peak["cpu"], cpu)
                if role == "ray worker":  # a worker is first seen as plain python, before it retitles itself
                    peak["role"] = role
                peak["rss"], peak["anon"] = max(peak["rss"], rss), max(peak["anon"], anon)
            self.stop_event.wait(SAMPLE_INTERVAL_S)

    def summary(self) -> dict:
        roles: dict[str, dict] = {}
        for peak in self.peaks.values():
            r = roles.setdefault(peak["role"], {"processes": 0, "max_peak_rss_mib": 0.0, "max_peak_anon_mib": 0.0,
                                                "cpu_seconds": 0.0})
            r["processes"] += 1
            r["max_peak_rss_mib"] = max(r["max_peak_rss_mib"], round(peak["rss"] / 2**20, 1))
            r["max_peak_anon_mib"] = max(r["max_peak_anon_mib"], round(peak["anon"] / 2**20, 1))
            r["cpu_seconds"] = round(r["cpu_seconds"] + peak["cpu"], 1)
        return roles

    def workers(self) -> list[dict]:
        """Every Ray worker's peaks (MiB) and CPU seconds, largest private memory first."""
        rows = [{"pid": pid, "peak_rss_mib": round(p["rss"] / 2**20, 1), "peak_anon_mib": round(p["anon"] / 2**20, 1),
                 "cpu_seconds": round(p["cpu"], 1)} for pid, p in self.peaks.items() if p["role"] == "ray worker"]
        return sorted(rows, key=lambda r: -r["peak_anon_mib"])


def stage_benchmark(sizes: list[int], root: Path, code: Path, docs_per_file: int = DOCS_PER_FILE) -> list[dict]:
    from bench_env import ray_head

    # The Ray head's processes (its workers included) and the driver import codemill from `code`.
    os.environ["PYTHONPATH"] = str(code)
    results = []
    for n_docs in sizes:
        inp = make_large_corpus(root, n_docs, docs_per_file)
        out = root / f"out-{n_docs}"
        with ray_head(num_cpus=2) as head:
            cmd = [sys.executable, "-m", "codemill.dedup", "--input", str(inp), "--out", str(out), "--force"]
            started = time.time()
            proc = subprocess.Popen(cmd, cwd=code, env={**os.environ, **head.env()})
            sampler = MemorySampler(head, proc.pid)
            sampler.start()
            rc = proc.wait()
            wall = time.time() - started
            sampler.stop_event.set()
            sampler.join()
        if rc != 0:
            raise RuntimeError(f"dedup stage failed on {n_docs} documents (exit {rc})")
        stats = json.loads((out / "stats.json").read_text())
        memory = sampler.summary()
        # The stage's own work: the driver and the Ray workers (the cluster's daemons are left out).
        cpu = sum(memory.get(role, {}).get("cpu_seconds", 0.0) for role in ("driver (python -m codemill.dedup)",
                                                                             "ray worker"))
        result = {"documents": n_docs, "code": str(code), "wall_seconds": round(wall, 1),
                  "docs_per_second": round(n_docs / wall, 1), "cpu_seconds": round(cpu, 1),
                  "docs_per_cpu_second": round(n_docs / cpu, 1) if cpu else None,
                  "load_average_after": os.getloadavg(),
                  "stage_timings": stats["timings"], "removed_by_kind": stats["removed_by_kind"],
                  "duplicate_rate": round(stats["duplicate_rate"], 4), "graph": stats["graph"],
                  "lsh": stats["lsh"], "input_megabytes": round(sum(f.stat().st_size for f in (inp / "kept").iterdir()) / 1e6, 1),
                  "peak_memory": memory, "workers": sampler.workers()}
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["signatures", "corpus", "stage"],
                   help="corpus: only generate the largest --docs corpus (the stage part reuses it)")
    p.add_argument("--smoke", action="store_true",
                   help="both parts, tiny: 50 signatures, a 400-document corpus; results to a temporary file")
    p.add_argument("--signature-docs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--work", default="/tmp/cm-dedup-bench", help="where corpora and outputs go (reused)")
    p.add_argument("--out", default=None)
    p.add_argument("--code", type=Path, default=REPO_ROOT, help="checkout whose codemill runs the stage")
    args = p.parse_args()
    if not args.smoke and args.part is None:
        p.error("--part is required (or --smoke)")
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    machine = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    if args.smoke:
        work = Path(tempfile.mkdtemp(prefix="cm-dedup-bench-smoke-"))
        result = {"machine": machine, "smoke": True, "signatures": signature_benchmark(50, 1),
                  "runs": stage_benchmark([400], work, args.code.resolve(), docs_per_file=200)}
        out = results_path(args.out, "dedup_throughput_smoke.json", smoke=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.part == "corpus":
        print(make_large_corpus(Path(args.work), max(args.docs)))
        return
    if args.part == "signatures":
        result = {"machine": machine, **signature_benchmark(args.signature_docs, args.rounds)}
    else:
        result = {"machine": machine, "runs": stage_benchmark(args.docs, Path(args.work), args.code.resolve())}
    result["command"] = " ".join(sys.argv)
    print(json.dumps(result, indent=2))
    out = Path(args.out or REPO_ROOT / "benchmarks" / "results" / f"dedup_throughput_{args.part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
