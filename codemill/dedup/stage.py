"""The dedup stage on Ray: `python -m codemill.dedup --input <filter output> --out URI`.

Ray Data computes a sketch of every document (signature, exact key, contamination hits) in parallel
batches; band keys and exact keys are hash-shuffled into partitions (Ray Data groupby on a partition
column, so no process sees more than one partition's keys) and each partition yields star edges; the
driver then holds only the edges and the rows of the documents they touch (see resolve.py), and the
surviving documents stream from the input to `kept/`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codemill import storage
from codemill.dedup import sketch as sk
from codemill.dedup.config import DedupConfig
from codemill.dedup.decontam import BenchmarkIndex, load_index
from codemill.dedup.lsh import optimal_bands_rows, unique_edges
from codemill.dedup.minhash import permutations
from codemill.dedup.resolve import DUPLICATES_SCHEMA, KIND_CONTAMINATION, resolve_clusters
from codemill.dedup.stats import dedup_stats
from codemill.runner import StageRun
from codemill.stages import DEDUP_DUPLICATES, DEDUP_KEPT, FILTER_KEPT

log = logging.getLogger("codemill.dedup")


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


def _collect_edges(edge_datasets) -> tuple[np.ndarray, np.ndarray]:
    src_parts, dst_parts = [], []
    for ds in edge_datasets:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            src_parts.append(batch["src"])
            dst_parts.append(batch["dst"])
    if not src_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return unique_edges(np.concatenate(src_parts), np.concatenate(dst_parts))


def _contamination_rows(contaminated: pa.Table) -> pa.Table:
    n = contaminated.num_rows
    grams = np.maximum(contaminated["contamination_ngrams"].to_numpy(), 1)
    return pa.table({
        "doc_id": contaminated["doc_id"], "cluster_id": pa.nulls(n, pa.int64()),
        "kept_doc_id": pa.nulls(n, pa.string()), "kind": pa.array([KIND_CONTAMINATION] * n, pa.string()),
        "similarity": pa.array(contaminated["contamination_hits"].to_numpy() / grams, pa.float64()),
        "language": contaminated["language"], "benchmark_task_id": contaminated["contamination_task_id"],
    }, schema=DUPLICATES_SCHEMA)


def _candidate_edges(sketches, config: DedupConfig, bands: int, rows: int, band_partitions: int,
                     n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Star edges of every LSH bucket and every exact-key group, each key set hash-shuffled by Ray Data
    into partitions of at most `band_rows_per_partition` rows."""
    min_matches = config.decontaminate.min_matches
    edge_sets = []
    if config.near.enabled:
        edge_sets.append(
            sketches.map_batches(sk.band_rows, fn_args=(bands, rows, band_partitions, min_matches),
                                 batch_format="pyarrow")
            .groupby("partition", num_partitions=band_partitions)
            .map_groups(sk.partition_edges, fn_args=(["key"],), batch_format="numpy"))
    exact_partitions = max(1, math.ceil(n_docs / config.band_rows_per_partition))
    edge_sets.append(
        sketches.map_batches(sk.exact_rows, fn_args=(exact_partitions, min_matches), batch_format="pyarrow")
        .groupby("partition", num_partitions=exact_partitions)
        .map_groups(sk.partition_edges, fn_args=(["exact_hi", "exact_lo"],), batch_format="numpy"))
    return _collect_edges(edge_sets)


def body(run: StageRun) -> dict:
    from ray.data.context import ShuffleStrategy

    from codemill.raysupport import run_data_stage

    return run_data_stage(run, _dedup, shuffle_strategy=ShuffleStrategy.HASH_SHUFFLE)


def _dedup(run: StageRun) -> dict:
    import ray.data
    from ray.data.expressions import col

    from codemill.raysupport import collect_table

    config: DedupConfig = run.config

    bands, rows = bands_and_rows(config)
    perm_a, perm_b = permutations(config.near.num_perm, config.near.seed)
    index = benchmark_index(config)
    min_matches = config.decontaminate.min_matches
    params = sk.SketchParams(config.near.shingle_size, perm_a, perm_b, index, min_matches)
    log.info("dedup: %d bands x %d rows (threshold %.2f, %d permutations); %d benchmark n-grams from %d problems",
             bands, rows, config.near.threshold, config.near.num_perm, len(index.hashes), index.n_problems)

    in_fs, in_path = storage.filesystem(run.input_path("input", FILTER_KEPT))
    docs = ray.data.read_parquet(in_path, filesystem=in_fs)
    with run.phase("sketch"):
        sketches = docs.map_batches(sk.sketch_batch, fn_args=(params,), batch_format="pyarrow",
                                    batch_size=config.docs_per_batch).materialize()
        n_docs = sketches.count()

    with run.phase("edges"):
        band_partitions = max(1, math.ceil(n_docs * bands / config.band_rows_per_partition))
        src, dst = _candidate_edges(sketches, config, bands, rows, band_partitions, n_docs)
    log.info("dedup: %d documents, %d candidate edges (%d band partitions)", n_docs, len(src), band_partitions)

    with run.phase("clusters"):
        edge_nodes = np.unique(np.concatenate([src, dst]))
        verify = config.near.threshold if config.near.verify == "estimated" else None
        # No reference to the members table stays here, so resolve_clusters can free its signature column.
        members = sketches.map_batches(sk.member_rows, fn_args=(edge_nodes,), batch_format="pyarrow")
        duplicates, graph_counts = resolve_clusters(src, dst, collect_table(members), config.near.num_perm, verify)
        del members
        contaminated = collect_table(
            sketches.filter(expr=col("contamination_hits") >= min_matches)
            .select_columns(["doc_id", "language", "contamination_hits", "contamination_ngrams",
                             "contamination_task_id"]))
        duplicates = removal_table(duplicates, contaminated)

    with run.phase("write"):
        per_language = sk.merge_language_summaries(
            collect_table(sketches.map_batches(sk.language_summary, batch_format="pyarrow"),
                          sk.LANGUAGE_SUMMARY_SCHEMA))
        not_deduplicated = int(pc.sum(per_language["not_deduplicated"]).as_py() or 0)
        run.clear(DEDUP_DUPLICATES, DEDUP_KEPT)
        storage.write_table(duplicates, run.path(DEDUP_DUPLICATES, "part-00000.parquet"))
        out_fs, out_path = storage.filesystem(run.path(DEDUP_KEPT))
        removed = duplicates["doc_id"].combine_chunks()
        docs.map_batches(sk.drop_removed, fn_args=(removed,), batch_format="pyarrow") \
            .write_parquet(out_path, filesystem=out_fs, compression=storage.PARQUET_COMPRESSION)

    stats = dedup_stats(per_language, duplicates, n_docs)
    stats.update({"not_deduplicated": {"count": not_deduplicated, "reason": "null doc_id or content (kept as is)"},
                  "lsh": {"bands": bands, "rows": rows, "threshold": config.near.threshold,
                          "num_perm": config.near.num_perm, "band_partitions": band_partitions},
                  "graph": graph_counts, "benchmark": {"ngrams": len(index.hashes), "problems": index.n_problems}})
    run.write_stats(stats)
    return {"docs_in": n_docs, "docs_kept": n_docs - duplicates.num_rows, "not_deduplicated": not_deduplicated,
            **{f"removed_{kind}": n for kind, n in stats["removed_by_kind"].items()}, **graph_counts}


def removal_table(duplicates: pa.Table, contaminated: pa.Table) -> pa.Table:
    """One row per removed document: a contaminated document is removed for that reason, even when it is
    also a duplicate (so no document is counted twice)."""
    if not contaminated.num_rows:
        return duplicates
    also_duplicate = pc.is_in(duplicates["doc_id"], value_set=contaminated["doc_id"].combine_chunks())
    return pa.concat_tables([duplicates.filter(pc.invert(also_duplicate)), _contamination_rows(contaminated)])
