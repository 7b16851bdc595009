"""One pass over a batch of input documents: everything dedup needs to know about each, without its
content. Pure functions on Arrow tables; the stage maps them over the corpus with Ray Data.

A sketch row: node (63-bit id from doc_id), doc_id, repo_stars, path, language, exact_hi/exact_lo
(normalised-content key), shingles (shingle positions; 0 = no code token), contamination hits,
n-grams and first matching task, and the MinHash signature.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codemill.dedup.decontam import BenchmarkIndex, find_contamination
from codemill.dedup.lsh import band_keys, partition_of, star_edges
from codemill.dedup.minhash import signatures
from codemill.dedup.normalize import exact_keys
from codemill.dedup.resolve import signature_column, signature_matrix

NODE_BITS = 63  # non-negative int64; collisions need ~2^31 documents to become likely
NO_NODE = -1  # a row without doc_id or content (bad input): kept and counted, never deduplicated
LANGUAGE_SUMMARY_SCHEMA = pa.schema([("language", pa.string()), ("docs", pa.int64()), ("not_deduplicated", pa.int64())])


def node_ids(doc_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    mask = (1 << NODE_BITS) - 1
    return np.array([int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8).digest(), "little") & mask
                     if d is not None else NO_NODE for d in doc_ids.to_pylist()], dtype=np.int64)


@dataclass(frozen=True)
class SketchParams:
    shingle_size: int
    perm_a: np.ndarray
    perm_b: np.ndarray
    benchmark: BenchmarkIndex
    min_matches: int


def column_or_nulls(batch: pa.Table, name: str, type_: pa.DataType) -> pa.Array | pa.ChunkedArray:
    return batch[name] if name in batch.column_names else pa.nulls(batch.num_rows, type_)


def sketch_batch(batch: pa.Table, params: SketchParams) -> pa.Table:
    contents = batch["content"]
    sigs, positions = signatures(contents, params.shingle_size, params.perm_a, params.perm_b)
    hi, lo = exact_keys(contents.to_pylist())
    contamination = find_contamination(contents, params.benchmark)
    nodes = np.where(contents.is_null().to_numpy(zero_copy_only=False), NO_NODE, node_ids(batch["doc_id"]))
    return pa.table({
        "node": nodes,
        "doc_id": batch["doc_id"],
        "repo_stars": column_or_nulls(batch, "repo_stars", pa.int64()),
        "path": column_or_nulls(batch, "path", pa.string()),
        "language": column_or_nulls(batch, "language", pa.string()),
        "exact_hi": hi,
        "exact_lo": lo,
        "shingles": positions,
        "contamination_hits": contamination.hits,
        "contamination_ngrams": contamination.ngrams,
        "contamination_task_id": pa.array(contamination.task_ids, pa.string()),
        "signature": signature_column(sigs),
    })


def contaminated(sketch: pa.Table, min_matches: int) -> np.ndarray:
    return sketch["contamination_hits"].to_numpy() >= min_matches


def deduplicable(sketch: pa.Table, min_matches: int) -> np.ndarray:
    """Rows that take part in deduplication: with an id, and not removed as contaminated."""
    return (sketch["node"].to_numpy() != NO_NODE) & ~contaminated(sketch, min_matches)


def band_rows(sketch: pa.Table, bands: int, rows: int, n_partitions: int, min_matches: int) -> dict:
    """(partition, key, node) for every band of every document that has shingles."""
    keep = deduplicable(sketch, min_matches) & (sketch["shingles"].to_numpy() > 0)
    num_perm = sketch.schema.field("signature").type.byte_width // 4
    sigs = signature_matrix(sketch["signature"], num_perm)[keep]
    keys = band_keys(sigs, bands, rows).ravel()
    nodes = np.repeat(sketch["node"].to_numpy()[keep], bands)
    return {"partition": partition_of(keys, n_partitions), "key": keys, "node": nodes}


def exact_rows(sketch: pa.Table, n_partitions: int, min_matches: int) -> dict:
    """(partition, exact_hi, exact_lo, node) for every document."""
    keep = deduplicable(sketch, min_matches)
    hi, lo = sketch["exact_hi"].to_numpy()[keep], sketch["exact_lo"].to_numpy()[keep]
    return {"partition": partition_of(hi, n_partitions), "exact_hi": hi, "exact_lo": lo,
            "node": sketch["node"].to_numpy()[keep]}


def partition_edges(partition: dict, key_columns: list[str]) -> dict:
    """Star edges of one shuffle partition (a dict of numpy columns holding every row of its keys)."""
    keys = np.stack([partition[c] for c in key_columns], axis=1)
    src, dst = star_edges(keys, partition["node"])
    return {"src": src, "dst": dst}


def member_rows(sketch: pa.Table, sorted_nodes: np.ndarray) -> pa.Table:
    """The sketch rows (without contamination columns) whose node is in `sorted_nodes`."""
    nodes = sketch["node"].to_numpy()
    pos = np.clip(np.searchsorted(sorted_nodes, nodes), 0, max(len(sorted_nodes) - 1, 0))
    hit = (sorted_nodes[pos] == nodes) if len(sorted_nodes) else np.zeros(len(nodes), bool)
    return sketch.filter(pa.array(hit)).select(
        ["node", "doc_id", "repo_stars", "path", "language", "exact_hi", "exact_lo", "signature"])


def language_summary(sketch: pa.Table) -> pa.Table:
    """Per language: documents, and documents left out of deduplication (null doc_id or content)."""
    rows = pa.table({"language": sketch["language"],
                     "not_deduplicated": pa.array((sketch["node"].to_numpy() == NO_NODE).astype(np.int64))})
    summary = rows.group_by("language").aggregate([("not_deduplicated", "count"), ("not_deduplicated", "sum")])
    return summary.select(["language", "not_deduplicated_count", "not_deduplicated_sum"]) \
        .rename_columns(["language", "docs", "not_deduplicated"])


def merge_language_summaries(summaries: pa.Table) -> pa.Table:
    merged = summaries.group_by("language").aggregate([("docs", "sum"), ("not_deduplicated", "sum")])
    return merged.select(["language", "docs_sum", "not_deduplicated_sum"]) \
        .rename_columns(["language", "docs", "not_deduplicated"])


def drop_removed(batch: pa.Table, removed_doc_ids: pa.Array) -> pa.Table:
    if len(removed_doc_ids) == 0:
        return batch
    return batch.filter(pc.invert(pc.fill_null(pc.is_in(batch["doc_id"], value_set=removed_doc_ids), False)))
