"""codemill against datatrove (the peer a user would pick instead), side by side in one run, on one corpus.

Contenders, each on --docs documents and on a 1k-document start-up run, 2 workers each:
- dedup: `python -m codemill.dedup` (its defaults: 256 permutations, LSH 25 bands x 10 rows, exact keys,
  candidate verification) on a fresh local Ray head of 2 CPUs, against datatrove's MinHash dedup, its four
  steps (signatures: 2 tasks; buckets: 25 tasks; cluster: 1 task; filter writing the kept documents as
  Parquet: 2 tasks), each a `LocalPipelineExecutor` with 2 workers, 25 buckets x 10 hashes (64-bit xxhash,
  datatrove's default), 5-gram shingles;
- tokenize: `python -m codemill.tokenize` (CodeGeeX's tokenizer, pack, shuffle, write shards) against
  datatrove's `DocumentTokenizer` (2 tasks, 2 workers) then `DocumentTokenizerMerger` (1 task), with the
  `tokenizer.json` codemill saves (`codegeex_tokenizer()`), `<|endoftext|>` after each document as codemill
  adds it, `TOKENIZERS_PARALLELISM=false` (one thread per worker, like codemill's workers).

Adaptations, so that datatrove shingles what codemill shingles: its word tokenizer is replaced by
`CodeTokens` (codemill's code tokens, `codemill.dedup.shingles.TOKEN_PATTERN`, passed as `language=`, which
datatrove accepts for custom tokenizers) and its text normalisation is off (every `TextNormConfig` flag
False), so its 5-grams are codemill's shingles, joined by one space; they are hashed with datatrove's
64-bit xxhash of their UTF-8 bytes (`CodeMinhashSignature`: datatrove hands xxhash a str, which xxhash >= 4,
codemill's pin, refuses; xxhash < 4 encoded it the same way). One difference is left: a document of
1-4 tokens has one shingle in codemill and none (no signature) in datatrove.

Measured per contender, each in its own session of processes (the driver, started with a new session, and
for codemill the Ray head's session), sampled from /proc every 0.5 s:
- wall seconds; CPU seconds of the work: the driver's session (the larger of wait4's figure, the driver
  and its reaped descendants, and the sum of its processes' last readings), plus the Ray workers' last
  readings; the Ray head's daemons (GCS, raylet, dashboard, agents) are reported apart;
- private memory: per process, RssAnon of /proc/<pid>/status (heap and buffers; not mapped files, nor the
  shared memory Ray's object store lives in, so its pages count in no process); the peak of the largest
  process, and the peak of the sum over the whole tree, with and without the Ray head's daemons: the
  figure dedup_throughput.py and tokenize_throughput.py report as private.
Dedup agreement: the corpus's known copies (benchmarks/dedup_throughput.py's exact and near copies, each
matched to its source: the window of the same path in the same input file with the highest Jaccard), their
true Jaccard on codemill's shingles, and whether each tool put the pair in one cluster, by Jaccard band.

The corpus is dedup_throughput.py's (windows of real code files with renamed identifiers, 10% exact and
10% near copies), generated once under --work and reused; both stages of both tools read it.

Both contenders of a stage run in the same window, alternating (codemill first in even rounds, datatrove
first in odd ones) and repeated `--rounds` times; every run records the machine's load average (1, 5, 15
min) just before and after it. The ratios are of the medians over the rounds; each round's own ratio is given
beside (its two runs were neighbours in time). On a machine shared with other work, read the load averages
before the ratios.

datatrove 0.10.1 is in codemill's [dev] extra (`pip install -e .[dev]`), for this script and its smoke run.

    bash scripts/in-netns.sh .venv/bin/python benchmarks/vs_datatrove.py --docs 100000 --rounds 3
    bash scripts/in-netns.sh .venv/bin/python benchmarks/vs_datatrove.py --smoke   # 400 documents, one round
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import xxhash
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.utils.word_tokenizers import WordTokenizer

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path[:0] = [str(REPO_ROOT), str(BENCH_DIR)]

from codemill.dedup.shingles import TOKEN_PATTERN

DATATROVE_VERSION = "0.10.1"
WORKERS = 2
BUCKETS, HASHES_PER_BUCKET = 25, 10
BUCKET_TASKS = BUCKETS          # datatrove's buckets step needs a multiple of the bucket count
STARTUP_DOCS = 1000             # the start-up run: fixed costs, not throughput
STARTUP_FILES = 2               # one input file per worker, as in the full corpus
SAMPLE_INTERVAL_S = 0.5
JACCARD_BANDS = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)  # the last band is exactly 1.0
# On the loaded machine a driver sometimes fails to connect to the fresh head (GCS calls time out after
# Ray's 60 s): it is given longer, and the run is repeated on a new head if it still fails (attempts recorded).
RAY_ATTEMPTS = 3
GCS_REQUEST_TIMEOUT_S = 600
TICK = os.sysconf("SC_CLK_TCK")
RAY_DAEMON_TITLES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


# ---------------------------------------------------------------- datatrove's side (run in its own process)

class CodeTokens(WordTokenizer):
    """codemill's code tokens as a datatrove word tokenizer (only `word_tokenize` is used by MinHash)."""

    def word_tokenize(self, text: str) -> list[str]:
        return TOKEN_PATTERN.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError


def xxhash64_utf8(text: str) -> int:
    """datatrove's 64-bit xxhash of a shingle, as xxhash < 4 computed it for a str (its UTF-8 bytes)."""
    return xxhash.xxh64_intdigest(text.encode())


class CodeMinhashSignature(MinhashDedupSignature):
    """datatrove's signature step, hashing shingles with `xxhash64_utf8`: datatrove's own hash function
    passes the str to xxhash, which xxhash >= 4 (codemill's environment) refuses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hash_func = xxhash64_utf8


def _reader(inp: str):
    from datatrove.pipeline.readers import ParquetReader

    return ParquetReader(f"{inp}/kept", glob_pattern="*.parquet", text_key="content", id_key="doc_id")


def _execute(pipeline: list, tasks: int, logs: str, timings: dict, name: str) -> None:
    from datatrove.executor import LocalPipelineExecutor

    started = time.perf_counter()
    LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(WORKERS, tasks), logging_dir=f"{logs}/{name}").run()
    timings[f"{name}_s"] = round(time.perf_counter() - started, 2)


def datatrove_dedup(inp: str, out: str) -> None:
    """datatrove's four MinHash steps over the corpus, as its example script runs them."""
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.text import TextNormConfig

    config = MinhashConfig(n_grams=5, num_buckets=BUCKETS, hashes_per_bucket=HASHES_PER_BUCKET,
                           norm_config=TextNormConfig(lowercase=False, norm_whitespace=False,
                                                      remove_punctuation=False, norm_unicode_diacritics=False,
                                                      norm_numbers=False, norm_weekdays=False,
                                                      norm_monthnames=False))
    tasks, timings = len(list(pathlib.Path(inp, "kept").glob("*.parquet"))), {}
    _execute([_reader(inp), CodeMinhashSignature(f"{out}/signatures", config=config, language=CodeTokens())],
             tasks, f"{out}/logs", timings, "signatures")
    _execute([MinhashDedupBuckets(f"{out}/signatures", f"{out}/buckets", config=config)],
             BUCKET_TASKS, f"{out}/logs", timings, "buckets")
    _execute([MinhashDedupCluster(f"{out}/buckets", f"{out}/remove_ids", config=config, save_cluster_id=True)],
             1, f"{out}/logs", timings, "cluster")
    _execute([_reader(inp), MinhashDedupFilter(f"{out}/remove_ids"), ParquetWriter(f"{out}/kept")],
             tasks, f"{out}/logs", timings, "filter")
    pathlib.Path(out, "timings.json").write_text(json.dumps(timings))


def datatrove_tokenize(inp: str, out: str, tokenizer_json: str) -> None:
    """datatrove's tokenizer (shuffled documents per task) then its merger into one shuffled token file."""
    from datatrove.pipeline.tokens.merger import DocumentTokenizerMerger
    from datatrove.pipeline.tokens.tokenizer import DocumentTokenizer

    tasks, timings = len(list(pathlib.Path(inp, "kept").glob("*.parquet"))), {}
    _execute([_reader(inp), DocumentTokenizer(f"{out}/tokenized", tokenizer_json, eos_token="<|endoftext|>")],
             tasks, f"{out}/logs", timings, "tokenize")
    _execute([DocumentTokenizerMerger(f"{out}/tokenized", f"{out}/merged", save_filename="merged")],
             1, f"{out}/logs", timings, "merge")
    pathlib.Path(out, "timings.json").write_text(json.dumps(timings))


# ---------------------------------------------------------------- measuring a process tree

def _read(pid: int) -> tuple[int, int, str, int]:
    """Session id, CPU ticks (utime + stime), process title and private memory (RssAnon, bytes)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    title = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    anon = next(line for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("RssAnon:"))
    return int(fields[3]), int(fields[11]) + int(fields[12]), title, int(anon.split()[1]) * 1024


class TreeSampler(threading.Thread):
    """Every SAMPLE_INTERVAL_S, the private memory and CPU ticks of every process of the given sessions:
    the driver's session (it and its descendants) and, for codemill, the Ray head's."""

    def __init__(self, driver_pid: int, ray_session: int | None):
        super().__init__(daemon=True)
        self.driver_pid, self.ray_session = driver_pid, ray_session
        self.stop_event = threading.Event()
        self.procs: dict[int, dict] = {}
        self.session_of: dict[int, int] = {}
        self.tree_peak = self.work_tree_peak = 0

    def _role(self, pid: int, session: int, title: str) -> str | None:
        if session == self.driver_pid:
            return "driver" if pid == self.driver_pid else "worker"
        if session != self.ray_session:
            return None
        return "worker" if title.startswith("ray::") and not title.startswith(RAY_DAEMON_TITLES) else "daemon"

    def sample(self) -> None:
        tree = work_tree = 0
        for entry in pathlib.Path("/proc").glob("[0-9]*"):
            pid = int(entry.name)
            try:
                session, ticks, title, private = _read(pid)
            except (OSError, ValueError, IndexError, StopIteration):
                continue
            role = self._role(pid, session, title)
            if role is None:
                continue
            proc = self.procs.setdefault(pid, {"role": role, "peak": 0, "ticks": 0})
            self.session_of[pid] = session
            if role == "worker":  # a Ray worker is plain python until it takes its title
                proc["role"] = role
            proc["peak"], proc["ticks"] = max(proc["peak"], private), ticks
            tree += private
            work_tree += private if proc["role"] != "daemon" else 0
        self.tree_peak = max(self.tree_peak, tree)
        self.work_tree_peak = max(self.work_tree_peak, work_tree)

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_INTERVAL_S):
            self.sample()


def mib(n: float) -> float:
    return round(n / 2**20, 1)


def measure(cmd: list[str], env: dict, log: pathlib.Path, ray_session: int | None = None) -> dict:
    """Run `cmd` in a new session and measure it (and the Ray head's session, when given)."""
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        sampler = TreeSampler(proc.pid, ray_session)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop_event.set()
        sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: see {log}")
    own = [p for pid, p in sampler.procs.items() if sampler.session_of[pid] == proc.pid]
    ray_workers = [p for pid, p in sampler.procs.items()
                   if sampler.session_of[pid] != proc.pid and p["role"] == "worker"]
    # wait4 counts the driver and the descendants that were reaped (datatrove's pool workers, children of
    # its forkserver, are not); the samples count each process to its last reading. The larger of the two.
    own_cpu = max(usage.ru_utime + usage.ru_stime, sum(p["ticks"] for p in own) / TICK)
    cpu = own_cpu + sum(p["ticks"] for p in ray_workers) / TICK
    procs = sampler.procs.values()
    work = [p for p in procs if p["role"] != "daemon"]
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "daemon_cpu_seconds": round(sum(p["ticks"] for p in procs if p["role"] == "daemon") / TICK, 1),
            "processes": len(work), "largest_process_private_mib": mib(max(p["peak"] for p in work)),
            "tree_private_mib": mib(sampler.tree_peak), "work_tree_private_mib": mib(sampler.work_tree_peak),
            "largest_daemon_private_mib": mib(max((p["peak"] for p in procs if p["role"] == "daemon"), default=0))}


# ---------------------------------------------------------------- the contenders

def run_codemill(stage: str, inp: pathlib.Path, out: pathlib.Path) -> dict:
    from bench_env import ray_head

    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "RAY_gcs_server_request_timeout_seconds": str(GCS_REQUEST_TIMEOUT_S)}
    cmd = [sys.executable, "-m", f"codemill.{stage}", "--input", str(inp), "--out", str(out), "--force"]
    for attempt in range(1, RAY_ATTEMPTS + 1):
        with ray_head(num_cpus=WORKERS) as head:
            try:
                result = measure(cmd, {**env, **head.env()}, out.parent / f"{out.name}.log", head.process.pid)
                break
            except SystemExit:
                if attempt == RAY_ATTEMPTS:
                    raise
    result["attempts"] = attempt
    result["stats"] = json.loads((out / "stats.json").read_text())
    return result


def run_datatrove(stage: str, inp: pathlib.Path, out: pathlib.Path, *args: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    call = ", ".join(repr(a) for a in (str(inp), str(out), *args))
    cmd = [sys.executable, "-c", f"import vs_datatrove; vs_datatrove.datatrove_{stage}({call})"]
    env = {**os.environ, "PYTHONPATH": f"{BENCH_DIR}:{REPO_ROOT}", "TOKENIZERS_PARALLELISM": "false"}
    result = measure(cmd, env, out.parent / f"{out.name}.log")
    result["steps"] = json.loads((out / "timings.json").read_text())
    return result


def datatrove_tokens(out: pathlib.Path, documents: int) -> int:
    """The documents' ids in the merged files (2-byte ids), less one <|endoftext|> per document."""
    return sum(f.stat().st_size for f in (out / "merged").glob("*.ds")) // 2 - documents


# ---------------------------------------------------------------- dedup agreement

def _input_files(inp: pathlib.Path) -> list[pathlib.Path]:
    return sorted((inp / "kept").glob("*.parquet"))


def known_pairs(inp: pathlib.Path) -> list[tuple[str, str, float]]:
    """(copy, source, true Jaccard) of each exact or near copy the generator made: its source is the
    original window of the same path in the same file with the highest Jaccard."""
    import pyarrow.parquet as pq

    from codemill.dedup.config import SHINGLE_SIZE
    from codemill.dedup.shingles import jaccard, shingles

    pairs = []
    for f in _input_files(inp):
        rows = pq.read_table(f, columns=["doc_id", "repo", "path", "content"]).to_pylist()
        originals: dict[str, list[dict]] = {}
        for r in rows:
            if r["repo"].startswith("repo"):
                originals.setdefault(r["path"], []).append(r)
        for r in rows:
            if r["repo"].startswith(("copy", "fork")):
                own = shingles(r["content"], SHINGLE_SIZE)
                path = r["path"].removeprefix("vendor/") if r["repo"].startswith("copy") else r["path"]
                best = max(((jaccard(own, shingles(o["content"], SHINGLE_SIZE)), o["doc_id"])
                            for o in originals.get(path, [])), default=None)
                if best:
                    pairs.append((r["doc_id"], best[1], best[0]))
    return pairs


def codemill_clusters(out: pathlib.Path) -> dict[str, str]:
    """Removed document -> the document kept in its cluster."""
    import pyarrow.parquet as pq

    table = pq.read_table(out / "duplicates", columns=["doc_id", "kept_doc_id"])
    return {d: k for d, k in zip(table["doc_id"].to_pylist(), table["kept_doc_id"].to_pylist()) if k}


def datatrove_clusters(inp: pathlib.Path, out: pathlib.Path) -> dict[str, str]:
    """Document -> cluster id, for the documents in a cluster: task r read files[r::tasks], its documents
    numbered in order; `{r:06d}.clusters` holds (document number, cluster id) pairs."""
    import pyarrow.parquet as pq

    files = _input_files(inp)
    clusters = {}
    for rank in range(len(files)):
        ids = [d for f in files[rank::len(files)] for d in pq.read_table(f, columns=["doc_id"])["doc_id"].to_pylist()]
        path = out / "remove_ids" / f"{rank:06d}.clusters"
        data = path.read_bytes() if path.exists() else b""
        for idx, cluster in struct.iter_unpack("<2I", data):
            clusters[ids[idx]] = f"c{cluster}"
    return clusters


def band_of(j: float) -> str:
    if j >= JACCARD_BANDS[-1]:
        return "1.0"
    lo = max(b for b in JACCARD_BANDS if b <= j)
    return f"[{lo}, {JACCARD_BANDS[JACCARD_BANDS.index(lo) + 1]})"


def agreement(pairs: list[tuple[str, str, float]], codemill: dict[str, str], datatrove: dict[str, str]) -> dict:
    bands: dict[str, dict] = {}
    for a, b, j in pairs:
        found_c = codemill.get(a, a) == codemill.get(b, b)
        found_d = a in datatrove and datatrove.get(a) == datatrove.get(b)
        key = "both" if found_c and found_d else "codemill_only" if found_c else "datatrove_only" if found_d \
            else "neither"
        entry = bands.setdefault(band_of(j), {"pairs": 0, "both": 0, "codemill_only": 0, "datatrove_only": 0,
                                              "neither": 0})
        entry["pairs"] += 1
        entry[key] += 1
    return dict(sorted(bands.items()))


# ---------------------------------------------------------------- corpora and main

def startup_corpus(work: pathlib.Path, source: pathlib.Path) -> pathlib.Path:
    """The first STARTUP_DOCS documents of the corpus, in STARTUP_FILES files, as a finished filter output."""
    import pyarrow.parquet as pq
    from dedup_quality import write_filter_output

    inp = work / f"docs-{STARTUP_DOCS}"
    if not (inp / "_manifest.json").exists():
        table = pq.read_table(_input_files(source)[0]).slice(0, STARTUP_DOCS)
        per_file = STARTUP_DOCS // STARTUP_FILES
        write_filter_output(inp, [table.slice(i, per_file) for i in range(0, STARTUP_DOCS, per_file)])
    return inp


def run_contender(tool: str, stage: str, inp: pathlib.Path, out: pathlib.Path, tokenizer_json: str,
                   documents: int) -> dict:
    """One measured run, with the machine's load average (1, 5, 15 min) just before and after it."""
    load_before = os.getloadavg()
    target = out / f"{tool}-{stage}"
    if tool == "codemill":
        run = run_codemill(stage, inp, target)
        tokens = run.pop("stats")["throughput"]["document_tokens"] if stage == "tokenize" else None
    else:
        run = run_datatrove(stage, inp, target, *((tokenizer_json,) if stage == "tokenize" else ()))
        tokens = datatrove_tokens(target, documents) if stage == "tokenize" else None
    run.pop("stats", None)
    if stage == "dedup":
        run["documents_per_cpu_second"] = round(documents / run["cpu_seconds"])
    else:
        run["document_tokens"] = tokens
        run["tokens_per_cpu_second"] = round(tokens / run["cpu_seconds"])
    return {**run, "load_average_before": load_before, "load_average_after": os.getloadavg()}


def summarize(stage: str, codemill: list[dict], datatrove: list[dict]) -> dict:
    """Ratios of the medians over the rounds, and each round's own ratio (its two runs were neighbours)."""
    unit = "documents_per_cpu_second" if stage == "dedup" else "tokens_per_cpu_second"

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    per_round = [round(c[unit] / d[unit], 2) for c, d in zip(codemill, datatrove)]
    return {"rounds": len(per_round), f"codemill_median_{unit}": median(codemill, unit),
            f"datatrove_median_{unit}": median(datatrove, unit),
            "per_cpu_second": round(median(codemill, unit) / median(datatrove, unit), 2),
            "per_cpu_second_by_round": per_round, "per_cpu_second_range": [min(per_round), max(per_round)],
            "wall": round(median(datatrove, "wall_seconds") / median(codemill, "wall_seconds"), 2),
            "largest_process_memory": round(median(codemill, "largest_process_private_mib")
                                            / median(datatrove, "largest_process_private_mib"), 2),
            "tree_memory": round(median(codemill, "tree_private_mib") / median(datatrove, "tree_private_mib"), 2),
            "load_average_1min_during": [min(r["load_average_before"][0] for r in codemill + datatrove),
                                         max(r["load_average_after"][0] for r in codemill + datatrove)]}


def compare(inp: pathlib.Path, out: pathlib.Path, documents: int, tokenizer_json: str, stages: list[str],
            rounds: int, quality: bool) -> dict:
    """Each stage's two contenders in the same window: alternating (codemill first in even rounds, datatrove
    first in odd ones) and repeated `rounds` times, each run with the load average around it."""
    runs: dict[str, list[dict]] = {f"{tool}_{stage}": [] for stage in stages for tool in ("codemill", "datatrove")}
    for r in range(rounds):
        for stage in stages:
            order = ("codemill", "datatrove") if r % 2 == 0 else ("datatrove", "codemill")
            for position, tool in enumerate(order):
                run = run_contender(tool, stage, inp, out, tokenizer_json, documents)
                runs[f"{tool}_{stage}"].append({"round": r, "position": position, **run})
                print(f"round {r} {stage} {tool}: {run['cpu_seconds']} CPU s, {run['wall_seconds']} s wall, "
                      f"load {run['load_average_before'][0]:.1f} -> {run['load_average_after'][0]:.1f}", flush=True)
    result: dict = {"documents": documents, "runs": runs}
    for stage in stages:
        result[f"{stage}_codemill_vs_datatrove"] = summarize(stage, runs[f"codemill_{stage}"],
                                                             runs[f"datatrove_{stage}"])
    if quality and "dedup" in stages:  # the last round's outputs
        result["dedup_agreement_by_true_jaccard"] = agreement(
            known_pairs(inp), codemill_clusters(out / "codemill-dedup"),
            datatrove_clusters(inp, out / "datatrove-dedup"))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=100_000, help="corpus size (a multiple of 50,000)")
    p.add_argument("--stages", nargs="+", choices=["dedup", "tokenize"], default=["dedup", "tokenize"])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of each stage's two contenders")
    p.add_argument("--skip-startup", action="store_true", help="no 1k-document start-up comparison")
    p.add_argument("--work", default="/tmp/cm-vs-datatrove", help="corpora and outputs (the corpus is reused)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/vs_datatrove.json")
    p.add_argument("--smoke", action="store_true",
                   help="400 documents, one round, no start-up run; results to a temporary file")
    args = p.parse_args()

    from importlib.metadata import version

    from bench_env import results_path
    from dedup_throughput import make_large_corpus
    from machine import cpu_model

    from codemill.tokenize.tokenizer import codegeex_tokenizer

    if version("datatrove") != DATATROVE_VERSION:
        print(f"note: datatrove {version('datatrove')}, this script was written against {DATATROVE_VERSION}")
    out_path = results_path(args.out, "vs_datatrove.json", args.smoke)
    if args.smoke:
        work = pathlib.Path(tempfile.mkdtemp(prefix="cm-vs-datatrove-smoke-"))
        args.docs, args.rounds, args.skip_startup = 400, 1, True
        inp = make_large_corpus(work, args.docs, docs_per_file=200)
    else:
        work = pathlib.Path(args.work)
        inp = make_large_corpus(work, args.docs)
    tokenizer_json = work / "tokenizer.json"
    codegeex_tokenizer().save(str(tokenizer_json))
    report = {"command": " ".join(sys.argv), "smoke": args.smoke,
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_before": os.getloadavg()},
              "versions": {"datatrove": version("datatrove"),
                           "codemill": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT,
                                                             capture_output=True, text=True).stdout.strip()},
              "workers": WORKERS, "datatrove_minhash": {"buckets": BUCKETS, "hashes_per_bucket": HASHES_PER_BUCKET}}
    if not args.skip_startup:
        report["startup"] = compare(startup_corpus(work, inp), work / "out-startup", STARTUP_DOCS,
                                    str(tokenizer_json), args.stages, 1, quality=False)
        print(json.dumps({k: v for k, v in report["startup"].items() if k != "runs"}, indent=2), flush=True)
    report["full"] = compare(inp, work / f"out-{args.docs}", args.docs, str(tokenizer_json), args.stages,
                             args.rounds, quality=True)
    report["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in report["full"].items() if k != "runs"}, indent=2), flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
