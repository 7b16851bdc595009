"""The dedup stage on Ray: `python -m codemill.dedup --input <filter output> --out URI`.

One Ray task per input file sketches it (signature, exact key, contamination hits), spilling its sketch,
band-key and exact-key rows to a work folder under the stage's output (corpus.py); the duplicate graph is
then built, verified, split into components and resolved by Ray tasks over spilled groups (graph.py);
last, one task per input file writes its kept rows. The driver holds only file names and counts, so its
memory grows with neither the corpus nor its duplicates; the work folder is removed at the end.
"""

from __future__ import annotations

import logging
import math

import pyarrow as pa
import pyarrow.parquet as pq

from codemill import storage
from codemill.dedup import sketch as sk
from codemill.dedup.config import DedupConfig
from codemill.dedup.corpus import SketchPlan, sketch_file, write_kept
from codemill.dedup.decontam import BenchmarkIndex, load_index
from codemill.dedup.graph import GraphPlan, find_duplicates
from codemill.dedup.lsh import optimal_bands_rows
from codemill.dedup.minhash import permutations
from codemill.dedup.resolve import DUPLICATES_SCHEMA
from codemill.dedup.stats import dedup_stats
from codemill.progress import PROGRESS_EVERY_S, Progress
from codemill.runner import StageRun
from codemill.stages import DEDUP_DUPLICATES, DEDUP_KEPT, FILTER_KEPT

log = logging.getLogger("codemill.dedup")

# The spilled intermediate state, under the stage's output while it runs (removed before it ends).
WORK_DIR = "_work"


def bands_and_rows(config: DedupConfig) -> tuple[int, int]:
    near = config.near
    if near.bands is not None:
        return near.bands, near.rows
    return optimal_bands_rows(near.threshold, near.num_perm, near.false_positive_weight, near.false_negative_weight)


def benchmark_index(config: DedupConfig) -> BenchmarkIndex:
    d = config.decontaminate
    if not d.paths:
        return BenchmarkIndex.empty(d.ngram)
    return load_index(d.paths, d.ngram, d.fields, d.boilerplate_min_problems)


def _row_count(uri: str) -> int:
    fs, path = storage.filesystem(uri)
    with fs.open_input_file(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def release_arrow_memory() -> None:
    """Hand the memory Arrow's pool has freed back to the OS. Its default pool (mimalloc) keeps freed pages
    for reuse, so a Ray worker that ran a sketch task and then graph steps kept the sketch task's pages on top
    of each later step's: at 100k documents the largest worker peaked at 417 MiB, 368 MiB with the pool
    released before and after each task (benchmarks/vs_datatrove.py; datatrove's largest process: 249 MiB)."""
    pa.default_memory_pool().release_unused()


def _released(step, *args):
    """`step(*args)` with Arrow's freed memory returned to the OS before and after it."""
    release_arrow_memory()
    try:
        return step(*args)
    finally:
        release_arrow_memory()


def ray_map(step, arguments: list[tuple], every_s: float = PROGRESS_EVERY_S) -> list:
    """Run `step(*args)` for every argument tuple as Ray tasks of one CPU (named after the step); their
    results, in order. While they run, tasks done of total, rate and ETA are logged every few seconds."""
    import ray

    task = ray.remote(num_cpus=1)(_released).options(name=step.__name__)
    refs = [task.remote(step, *args) for args in arguments]
    progress = Progress(f"dedup {step.__name__}", len(refs), every_s=every_s)
    pending = refs
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=progress.every_s)
        if line := progress.update(len(refs) - len(pending)):
            log.info(line)
    return ray.get(refs)


def body(run: StageRun) -> dict:
    from codemill.raysupport import ensure_ray

    ensure_ray()
    return _dedup(run, ray_map)


def _dedup(run: StageRun, map_fn) -> dict:
    config: DedupConfig = run.config
    bands, rows = bands_and_rows(config)
    perm_a, perm_b = permutations(config.near.num_perm, config.near.seed)
    index = benchmark_index(config)
    min_matches = config.decontaminate.min_matches
    params = sk.SketchParams(config.near.shingle_size, perm_a, perm_b, index, min_matches)
    log.info("dedup: %d bands x %d rows (threshold %.2f, %d permutations); %d benchmark n-grams from %d problems",
             bands, rows, config.near.threshold, config.near.num_perm, len(index.hashes), index.n_problems)

    files = storage.list_files(run.input_path("input", FILTER_KEPT), ".parquet")
    n_docs = sum(_row_count(f) for f in files)
    band_partitions = max(1, math.ceil(n_docs * bands / config.band_rows_per_partition))
    exact_partitions = max(1, math.ceil(n_docs / config.band_rows_per_partition))
    run.clear(DEDUP_DUPLICATES, DEDUP_KEPT, WORK_DIR)
    graph = GraphPlan(work=run.path(WORK_DIR), duplicates=run.path(DEDUP_DUPLICATES), num_perm=config.near.num_perm,
                      verify_threshold=config.near.threshold if config.near.verify == "estimated" else None,
                      edge_rows_per_partition=config.edge_rows_per_partition,
                      member_rows_per_partition=config.member_rows_per_partition)
    plan = SketchPlan(params, graph, config.docs_per_batch, bands, rows, band_partitions, exact_partitions,
                      near=config.near.enabled)

    with run.phase("sketch"):
        sketched = map_fn(sketch_file, [(plan, uri, i) for i, uri in enumerate(files)])
    chunks = sorted({c for s in sketched for c in s["chunks"]})
    with run.phase("clusters"):
        found = find_duplicates(graph, chunks, band_partitions if config.near.enabled else 0, exact_partitions,
                                map_fn)
    log.info("dedup: %d documents, %s (%d band partitions)", n_docs, found["graph"], band_partitions)

    with run.phase("write"):
        kept = sum(map_fn(write_kept, [(graph, uri, i, run.path(DEDUP_KEPT, f"part-{i:05d}.parquet"),
                                        config.docs_per_batch) for i, uri in enumerate(files)]))
        if not storage.exists(run.path(DEDUP_DUPLICATES)):  # readers expect the folder, even with no duplicates
            storage.write_table(DUPLICATES_SCHEMA.empty_table(), run.path(DEDUP_DUPLICATES, "part-00000.parquet"))
        storage.delete(run.path(WORK_DIR))

    summaries = [s["summary"] for s in sketched]
    per_language = sk.merge_language_summaries(pa.concat_tables(summaries)) if summaries \
        else sk.LANGUAGE_SUMMARY_SCHEMA.empty_table()
    not_deduplicated = sum(per_language["not_deduplicated"].to_pylist())
    removed = dict(found["removed"])
    for s in sketched:
        for key, n in s["removed"].items():
            removed[key] = removed.get(key, 0) + n
    stats = dedup_stats(per_language, removed, n_docs)
    stats.update({"not_deduplicated": {"count": not_deduplicated, "reason": "null doc_id or content (kept as is)"},
                  "lsh": {"bands": bands, "rows": rows, "threshold": config.near.threshold,
                          "num_perm": config.near.num_perm, "band_partitions": band_partitions},
                  "graph": found["graph"], "benchmark": {"ngrams": len(index.hashes), "problems": index.n_problems}})
    run.write_stats(stats)
    if stats["kept"] != kept:
        raise RuntimeError(f"dedup wrote {kept} kept documents, but {stats['kept']} should remain")
    return {"docs_in": n_docs, "docs_kept": kept, "not_deduplicated": not_deduplicated,
            **{f"removed_{kind}": n for kind, n in stats["removed_by_kind"].items()}, **found["graph"]}
