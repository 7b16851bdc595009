"""Speed of the tokenize stage, side by side in one run on the same documents:

- stage: the whole tokenize stage (`codemill.tokenize.stage.body` through the stage runner, as
  `python -m codemill.tokenize` runs it) on a local Ray cluster of --cpus CPUs: read Parquet, tokenize,
  pack, shuffle, write shards, manifest and statistics (GPT-2 counts on its 5% sample included);
- raw: Hugging Face `tokenizers` `encode_batch` with the same CodeGeeX tokenizer on the same texts, in
  batches of the stage's size (256 documents), on one core (`TOKENIZERS_PARALLELISM=false`: on a shared machine, Rust's spinning thread pool measures the
  neighbours, not the tokenizer) (the target: the whole stage within 15% of it per core);
- reference: CodeGeeX's procedure, Python string replacement of space runs, then GPT-2's fast tokenizer
  from `transformers`, one document at a time as CodeGeeX's `encode_code` does, on one core likewise (the target: the stage >= 1.5x it per core).

Tokens per second per core = the documents' ids / CPU seconds. The machine is shared with other jobs, so
wall time measures the neighbours as much as the code; CPU time is what each contender itself spent: the
baselines' process CPU time, and for the stage the CPU time of the driver and of every Ray worker and
actor it used (their start-up included); the cluster's daemons (GCS, raylet, dashboard, agents) are
reported apart, as `stage_cluster_daemons`. Wall seconds are reported beside. The three alternate for --rounds rounds; the round with the least
CPU time of each is reported. The script checks that all three produce the same number of
ids (the stage's ids are the raw ones: parity is proved by the tests). Corpus: real code files of the venv's
site-packages in the filter's size range (1-100 KB), written as a finished dedup stage's `kept/`.

    bash scripts/in-netns.sh .venv/bin/python benchmarks/tokenize_throughput.py --mb 40 --cpus 2 \\
        --out benchmarks/results/tokenize_throughput.json
    bash scripts/in-netns.sh .venv/bin/python benchmarks/tokenize_throughput.py --smoke   # 0.2 MB, one round

--part memory: the stage's memory as the corpus grows. `python -m codemill.tokenize` runs as its own driver
process against a fresh local Ray head of --cpus CPUs, on --docs documents (default 100k and 1M: windows of
real site-packages code files, lognormal lengths, generated once under --work and reused); a sampler reads
`/proc/<pid>/status` of the driver and of every process of the head every 0.5 s: peak RSS and RssAnon
(private memory: without the object store's shared pages a worker maps), and for workers the task their
process title named at their peak. CPU seconds: the driver's own (from wait4) plus every worker's last
/proc reading; tokens per second per core = document ids / those CPU seconds. `by_task_kind`: per process
title, the largest private memory seen under it and the largest rise within one stint of a process under it.
`shards_and_manifest_sha256` hashes every shard and the manifest: two runs (or two checkouts) with the same
digest wrote the same bytes. `--code NAME=PATH` runs the codemill of another checkout (e.g. `git worktree add /tmp/old HEAD~1`; default: this one) on the same
corpus, for a side-by-side; a worktree also keeps a long run safe from edits to this one.

    bash scripts/in-netns.sh .venv/bin/python benchmarks/tokenize_throughput.py --part memory \\
        --docs 100000 1000000 --code new=/tmp/new --code old=/tmp/old --out benchmarks/results/tokenize_memory.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pathlib
import platform
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

from bench_env import ray_head, results_path
from machine import cpu_model  # benchmarks/machine.py, beside this script

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MIN_FILE_BYTES = 1024       # SPEC §1's size rule: the files a real run tokenizes
MAX_FILE_BYTES = 100 * 1024


def corpus(limit_mb: float) -> list[tuple[str, str, str]]:
    """(path, language, text) of site-packages files with a known language, spread over the packages."""
    from codemill.languages import EXTENSION_TO_LANGUAGE

    root = pathlib.Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSION_TO_LANGUAGE and p.is_file()
                   and MIN_FILE_BYTES <= p.stat().st_size <= MAX_FILE_BYTES)
    chosen, total = [], 0
    # every k-th file, so all packages contribute
    step = max(1, int(sum(p.stat().st_size for p in files) / (limit_mb * 2**20)))
    for path in files[::step]:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        chosen.append((str(path.relative_to(root)), EXTENSION_TO_LANGUAGE[path.suffix.lower()], text))
        total += len(text.encode())
        if total >= limit_mb * 2**20:
            break
    return chosen


def write_dedup_output(docs: list[tuple[str, str, str]], root: pathlib.Path) -> str:
    import hashlib

    import pyarrow as pa

    from codemill import manifest as mf
    from codemill import storage
    from codemill.crawl.schema import make_doc_id
    from codemill.filter.schema import KEPT_SCHEMA

    rows = []
    for path, language, text in docs:
        sha = hashlib.sha256(text.encode()).hexdigest()
        rows.append({"doc_id": make_doc_id("site-packages", path, sha), "repo": "site-packages", "path": path,
                     "ext": pathlib.Path(path).suffix, "content": text, "size_bytes": len(text.encode()),
                     "sha256": sha, "encoding": "utf-8", "repo_stars": 1, "repo_language": language,
                     "language": language})
    out = root / "dedup"
    table = pa.Table.from_pylist(rows, schema=KEPT_SCHEMA)
    per_file = max(1, len(rows) // 8)
    for k, start in enumerate(range(0, len(rows), per_file)):
        storage.write_table(table.slice(start, per_file), str(out / "kept" / f"part-{k:05d}.parquet"))
    mf.write_manifest(str(out), mf.Manifest(stage="dedup", status=mf.STATUS_COMPLETE, config_hash="bench", config={}))
    return str(out)


_TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL_S = 0.2


CLUSTER_DAEMONS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def session_cpu_ticks(session: int) -> dict[int, tuple[int, bool]]:
    """utime + stime of each live process of a session (from /proc), and whether it is a Ray worker
    (a task or actor process, `ray::...`) rather than one of the cluster's daemons (GCS, raylet,
    dashboard and its agents, monitors)."""
    ticks = {}
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:
                continue
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError):
            continue
        ticks[int(proc.name)] = (int(fields[11]) + int(fields[12]),
                                 title.startswith("ray::") and not title.startswith(CLUSTER_DAEMONS))
    return ticks


class Clock:
    """Wall and CPU seconds of a piece of work: this process's CPU, plus, when given a Ray cluster's session,
    that of the cluster's workers (`cpu`) and of its daemons (`daemon_cpu`). Ray workers come and go and are
    reaped without being charged to their parent, so the cluster's processes are sampled every 0.2 s and
    each one's last reading counts (a worker's last 0.2 s before it exits can be missed: the figure errs
    low by that much)."""

    def __init__(self, session: int | None = None):
        self.session = session
        self.daemon_cpu = 0.0
        self._first: dict[int, int] = {}
        self._last: dict[int, tuple[int, bool]] = {}
        self._stop = threading.Event()

    def _sample(self) -> None:
        self._last.update(session_cpu_ticks(self.session))

    def _sampler(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._sample()

    def __enter__(self):
        if self.session:
            self._sample()
            self._first = {pid: ticks for pid, (ticks, _) in self._last.items()}  # new processes count from 0
            self._thread = threading.Thread(target=self._sampler, daemon=True)
            self._thread.start()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        if self.session:
            self._stop.set()
            self._thread.join()
            self._sample()
            for pid, (ticks, is_worker) in self._last.items():
                spent = (ticks - self._first.get(pid, 0)) / _TICK
                if is_worker:
                    self.cpu += spent
                else:
                    self.daemon_cpu += spent


def time_raw(tokenizer, texts: list[str], batch: int) -> tuple[Clock, int]:
    with Clock() as clock:
        n = sum(len(e.ids) for i in range(0, len(texts), batch)
                for e in tokenizer.encode_batch(texts[i:i + batch], add_special_tokens=False))
    return clock, n


def time_reference(reference, texts: list[str]) -> tuple[Clock, int]:
    from codemill.tokenize.reference import reference_encode

    with Clock() as clock:
        n = sum(map(len, reference_encode(reference, texts)))
    return clock, n


def time_stage(input_uri: str, out: str, ray_session: int) -> tuple[Clock, int, dict]:
    from codemill.runner import run_stage
    from codemill.tokenize.config import TokenizeConfig
    from codemill.tokenize.stage import body

    with Clock(ray_session) as clock:
        manifest = run_stage("tokenize", TokenizeConfig(), out, body, {"input": input_uri}, force=True)
    stats = json.loads(pathlib.Path(out, "stats.json").read_text())
    return clock, stats["throughput"]["document_tokens"], {"counts": manifest.counts, "stats": stats}


# ---------------------------------------------------------------- --part memory

DOCS_PER_FILE = 50_000     # documents per input Parquet file (the corpus of N documents is the first N/50k)
WINDOW_LINES_MEDIAN = 30   # a document is a window of a real file: lognormal lines, median 30 (~1 KB)
POOL_MB = 60               # of real files the windows are cut from (every package contributes)
MEMORY_SAMPLE_S = 0.5


def _window_docs(pool: list[tuple[str, str, list[str]]], part: int) -> list[tuple[str, str, str]]:
    """DOCS_PER_FILE (path, language, text) windows of the pool's files, drawn by a generator seeded by `part`."""
    rng = random.Random(part)
    docs = []
    for k in range(DOCS_PER_FILE):
        path, language, lines = pool[rng.randrange(len(pool))]
        length = max(3, int(rng.lognormvariate(math.log(WINDOW_LINES_MEDIAN), 0.9)))
        start = rng.randrange(max(1, len(lines) - length + 1))
        docs.append((f"w{part}-{k}/{path}", language, "".join(lines[start:start + length])))
    return docs


def windows_corpus(work: pathlib.Path, n_docs: int) -> str:
    """work/docs-N: a finished dedup output of n_docs windows (the Parquet files are shared between sizes)."""
    if n_docs % DOCS_PER_FILE:
        raise SystemExit(f"--docs must be a multiple of {DOCS_PER_FILE}")
    parts = work / "parts"
    pool = None
    for part in range(n_docs // DOCS_PER_FILE):
        target = parts / f"part-{part:05d}"
        if (target / "dedup" / "_manifest.json").exists():
            continue
        if pool is None:
            pool = [(path, language, text.splitlines(keepends=True)) for path, language, text in corpus(POOL_MB)]
        write_dedup_output(_window_docs(pool, part), target)
    out = work / f"docs-{n_docs}"
    if not (out / "_manifest.json").exists():
        from codemill import manifest as mf

        (out / "kept").mkdir(parents=True, exist_ok=True)
        for part in range(n_docs // DOCS_PER_FILE):
            for f in sorted((parts / f"part-{part:05d}" / "dedup" / "kept").iterdir()):
                link = out / "kept" / f"{part:05d}-{f.name}"
                if not link.exists():
                    os.link(f, link)
        mf.write_manifest(str(out), mf.Manifest(stage="dedup", status=mf.STATUS_COMPLETE, config_hash="bench",
                                                config={}))
    return str(out)


def _status(pid_dir: pathlib.Path) -> tuple[int, int, int, str]:
    """RSS, RssAnon (bytes), CPU ticks and process title of one process."""
    status = dict(line.split(":", 1) for line in (pid_dir / "status").read_text().splitlines() if ":" in line)
    stat = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    title = (pid_dir / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    return (int(status["VmRSS"].split()[0]) * 1024, int(status.get("RssAnon", "0 kB").split()[0]) * 1024,
            int(stat[11]) + int(stat[12]), title)


class MemorySampler(threading.Thread):
    """Peak RSS and RssAnon of the driver and of every process of one Ray head, and each worker's CPU."""

    def __init__(self, head, driver_pid: int):
        super().__init__(daemon=True)
        self.head, self.driver_pid, self.stop_event = head, driver_pid, threading.Event()
        self.peaks: dict[int, dict] = {}
        # per kind of task (process title): the largest private memory seen while one ran, and the largest rise
        # within one stint of a process under that title (what the task itself added, as far as 0.5 s samples
        # see it; the rest of a peak is what the process kept from its earlier tasks)
        self.by_title: dict[str, dict] = {}
        self.started = time.perf_counter()

    def _close_stint(self, peak: dict) -> None:
        title = peak.get("stint_title")
        if title is None:
            return
        agg = self.by_title.setdefault(title, {"max_anon": 0, "max_rise": 0, "stints": 0})
        agg["stints"] += 1
        agg["max_anon"] = max(agg["max_anon"], peak["stint_max"])
        agg["max_rise"] = max(agg["max_rise"], peak["stint_max"] - peak["stint_start"])

    def _role(self, pid_dir: pathlib.Path, title: str) -> str | None:
        if int(pid_dir.name) == self.driver_pid:
            return "driver"
        sid = int((pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[3])
        if sid != self.head.process.pid:
            return None
        if title.startswith("ray::") and not title.startswith(CLUSTER_DAEMONS):
            return "worker"
        return "daemon"

    def run(self) -> None:
        while not self.stop_event.wait(MEMORY_SAMPLE_S):
            for pid_dir in pathlib.Path("/proc").glob("[0-9]*"):
                try:
                    rss, anon, ticks, title = _status(pid_dir)
                    role = self._role(pid_dir, title)
                except (OSError, ValueError, KeyError, IndexError):
                    continue
                if role is None:
                    continue
                peak = self.peaks.setdefault(int(pid_dir.name), {"role": role, "rss": 0, "anon": 0, "task": ""})
                if role == "worker":  # a worker is first seen as plain python, before it retitles itself
                    peak["role"] = role
                if anon > peak["anon"]:
                    peak["anon"], peak["task"] = anon, title
                    peak["at_s"] = round(time.perf_counter() - self.started, 1)
                if role == "worker":
                    if title != peak.get("stint_title"):
                        self._close_stint(peak)
                        peak["stint_title"], peak["stint_start"], peak["stint_max"] = title, anon, anon
                    peak["stint_max"] = max(peak["stint_max"], anon)
                peak["rss"], peak["ticks"] = max(peak["rss"], rss), ticks

    def summary(self) -> dict:
        def mib(n: int) -> float:
            return round(n / 2**20, 1)

        workers = [p for p in self.peaks.values() if p["role"] == "worker"]
        for w in workers:
            self._close_stint(w)
            w["stint_title"] = None
        largest = max(workers, key=lambda w: w["anon"], default={})
        by_task: dict[str, float] = {}
        for w in workers:  # the largest private peak of the workers whose peak came in each kind of task
            by_task[w["task"]] = max(by_task.get(w["task"], 0.0), mib(w["anon"]))
        driver = next((p for pid, p in self.peaks.items() if pid == self.driver_pid), {"rss": 0, "anon": 0})
        return {"driver": {"peak_rss_mib": mib(driver["rss"]), "peak_anon_mib": mib(driver["anon"])},
                "workers": {"processes": len(workers), "max_peak_rss_mib": max((mib(w["rss"]) for w in workers), default=0),
                            "max_peak_anon_mib": max((mib(w["anon"]) for w in workers), default=0),
                            "max_peak_anon_mib_by_task": dict(sorted(by_task.items(), key=lambda kv: -kv[1])),
                            "largest_peak_at_s": largest.get("at_s"),
                            "by_task_kind": {t: {"max_anon_mib": mib(a["max_anon"]), "max_rise_mib": mib(a["max_rise"]),
                                                 "stints": a["stints"]}
                                             for t, a in sorted(self.by_title.items(), key=lambda kv: -kv[1]["max_anon"])},
                            "cpu_seconds": round(sum(w.get("ticks", 0) for w in workers) / _TICK, 2)},
                "daemons_cpu_seconds": round(sum(p.get("ticks", 0) for p in self.peaks.values()
                                                 if p["role"] == "daemon") / _TICK, 2)}


def memory_run(input_uri: str, out: pathlib.Path, code_root: pathlib.Path, cpus: int, settings: list[str]) -> dict:
    """The stage of the checkout at `code_root` as its own driver process on a fresh Ray head, sampled."""
    # The head's workers import codemill from the same checkout as the driver.
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(code_root)
    try:
        head = ray_head(num_cpus=cpus).start()
    finally:
        os.environ.pop("PYTHONPATH") if saved is None else os.environ.update(PYTHONPATH=saved)
    try:
        cmd = [sys.executable, "-m", "codemill.tokenize", "--input", input_uri, "--out", str(out), "--force",
               *(a for s in settings for a in ("--set", s))]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=code_root, env={**env, **head.env()})
        sampler = MemorySampler(head, proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop_event.set()
        sampler.join()
    finally:
        head.stop()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the stage failed on {input_uri} ({code_root})")
    stats = json.loads((out / "stats.json").read_text())
    memory = sampler.summary()
    driver_cpu = usage.ru_utime + usage.ru_stime
    cpu = driver_cpu + memory["workers"]["cpu_seconds"]
    tokens = stats["throughput"]["document_tokens"]
    rows = sum(split["rows"] for split in stats["splits"].values())
    digest = hashlib.sha256()  # of every shard's bytes and the manifest: equal digests = byte-identical outputs
    for path in [*sorted((out / "shards").iterdir()), out / "manifest.json"]:
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return {"code_root": str(code_root), "wall_seconds": round(wall, 1), "driver_cpu_seconds": round(driver_cpu, 2),
            "cpu_seconds": round(cpu, 2), "document_tokens": tokens, "tokens_per_s_per_core": round(tokens / cpu),
            "rows": rows, "tokens_per_row": round(tokens / rows, 3), "packing": stats.get("packing"),
            "shards_and_manifest_sha256": digest.hexdigest(),
            "memory": memory, "load_average_after": os.getloadavg()}


def memory_benchmark(args) -> dict:
    work = pathlib.Path(args.work)
    roots = {name: pathlib.Path(path).resolve() for name, path in (c.split("=", 1) for c in args.code)} \
        or {"this": REPO_ROOT}
    runs = []
    for n_docs in args.docs:
        input_uri = windows_corpus(work, n_docs)
        for name, root in roots.items():
            result = {"documents": n_docs, "code": name,
                      **memory_run(input_uri, work / f"out-{name}-{n_docs}", root, args.cpus, args.set)}
            print(json.dumps(result, indent=2), flush=True)
            runs.append(result)
            shutil.rmtree(work / f"out-{name}-{n_docs}", ignore_errors=True)
    return {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                        "stage_ray_cpus": args.cpus},
            "settings": args.set, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["throughput", "memory"], default="throughput")
    parser.add_argument("--mb", type=float, default=40.0, help="corpus size (MB of UTF-8 text)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the stage's Ray cluster")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000], help="memory: corpus sizes")
    parser.add_argument("--work", default="/tmp/cm-tokenize-bench", help="memory: corpora and outputs (reused)")
    parser.add_argument("--code", action="append", default=[],
                        help="memory: NAME=PATH of a checkout to run (repeat to run several side by side)")
    parser.add_argument("--set", action="append", default=[], help="memory: a stage setting, key=value")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="the throughput part on 0.2 MB, one round; results to a temporary file")
    args = parser.parse_args()
    if args.smoke:
        args.part, args.mb, args.rounds = "throughput", 0.2, 1
    if args.part == "memory":
        report = {**memory_benchmark(args), "command": " ".join(sys.argv)}
        out = pathlib.Path(args.out or REPO_ROOT / "benchmarks" / "results" / "tokenize_memory.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    args.out = results_path(args.out, "tokenize_throughput.json", args.smoke)

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the in-process baselines run on one core
    from codemill.tokenize.config import TOKENIZE_BATCH_DOCS
    from codemill.tokenize.reference import reference_tokenizer
    from codemill.tokenize.tokenizer import codegeex_tokenizer

    docs = corpus(args.mb)
    texts = [text for _, _, text in docs]
    mb = sum(len(t.encode()) for t in texts) / 2**20
    print(f"corpus: {len(texts)} files, {mb:.1f} MB", flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="cm-bench-tokenize-"))
    input_uri = write_dedup_output(docs, work)
    tokenizer, reference = codegeex_tokenizer(), reference_tokenizer()

    results: dict[str, list[Clock]] = {"stage": [], "raw": [], "reference": []}
    counts: dict[str, int] = {}
    detail = {}
    head = ray_head(num_cpus=args.cpus, token_file=work / "token").start()
    os.environ.update(head.env())
    try:
        for r in range(args.rounds):
            clock, counts["raw"] = time_raw(tokenizer, texts, TOKENIZE_BATCH_DOCS)
            results["raw"].append(clock)
            clock, counts["reference"] = time_reference(reference, texts)
            results["reference"].append(clock)
            clock, counts["stage"], detail = time_stage(input_uri, str(work / f"tokenize-{r}"), head.process.pid)
            results["stage"].append(clock)
            print(f"round {r}: " + ", ".join(f"{k} {v[-1].cpu:.2f} CPU s / {v[-1].wall:.2f} s" for k, v in
                                             results.items()) + f" (daemons {clock.daemon_cpu:.2f} CPU s)", flush=True)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        head.stop()
        shutil.rmtree(work, ignore_errors=True)
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the contenders disagree on the number of ids: {counts}")

    tokens = counts["raw"]
    best = {k: min(v, key=lambda c: c.cpu) for k, v in results.items()}
    per_core = {k: tokens / c.cpu for k, c in best.items()}
    report = {
        "machine": {"cpu": cpu_model(), "platform": platform.platform(), "load_average_after": os.getloadavg(),
                    "stage_ray_cpus": args.cpus},
        "corpus": {"files": len(texts), "mb": round(mb, 1), "tokens": tokens},
        "cpu_seconds": {k: [round(c.cpu, 3) for c in v] for k, v in results.items()},
        "wall_seconds": {k: [round(c.wall, 3) for c in v] for k, v in results.items()},
        "best": {k: {"cpu_seconds": round(c.cpu, 3), "wall_seconds": round(c.wall, 3)} for k, c in best.items()},
        "tokens_per_s_per_core": {k: round(v) for k, v in per_core.items()},
        "stage_cluster_daemons_cpu_seconds": round(best["stage"].daemon_cpu, 3),
        "stage_vs_raw": round(per_core["stage"] / per_core["raw"], 3),
        "stage_vs_reference": round(per_core["stage"] / per_core["reference"], 3),
        "stage_tokenize_seconds": detail["stats"]["throughput"]["tokenize_seconds"],
        "whitespace": detail["stats"]["whitespace"],
        "stage_counts": detail["counts"],
        "smoke": args.smoke,
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
