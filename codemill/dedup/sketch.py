"""One pass over a batch of input documents: everything dedup needs to know about each, without its
content. Pure functions on Arrow tables; corpus.py applies them to each input file.

A sketch row: node (63-bit id from doc_id), doc_id, repo_stars, path, language, exact_hi/exact_lo
(normalised-content key), shingles (shingle positions; 0 = no code token), contamination hits,
n-grams and first matching task, and the MinHash signature.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from codemill.dedup.decontam import BenchmarkIndex, find_contamination
from codemill.dedup.lsh import band_keys, partition_of
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


def band_rows(sketch: pa.Table, bands: int, rows: int, n_partitions: int,
              min_matches: int) -> tuple[pa.Table, np.ndarray]:
    """(key, node, loc) for every band of every document that has shingles, and each row's partition."""
    keep = deduplicable(sketch, min_matches) & (sketch["shingles"].to_numpy() > 0)
    num_perm = sketch.schema.field("signature").type.byte_width // 4
    sigs = signature_matrix(sketch["signature"], num_perm)[keep]
    keys = band_keys(sigs, bands, rows).ravel()
    table = pa.table({"key": keys, "node": np.repeat(sketch["node"].to_numpy()[keep], bands),
                      "loc": np.repeat(sketch["loc"].to_numpy()[keep], bands)})
    return table, partition_of(keys, n_partitions)


def exact_rows(sketch: pa.Table, n_partitions: int, min_matches: int) -> tuple[pa.Table, np.ndarray]:
    """(exact_hi, exact_lo, node, loc) for every deduplicable document, and each row's partition."""
    keep = deduplicable(sketch, min_matches)
    hi = sketch["exact_hi"].to_numpy()[keep]
    table = pa.table({"exact_hi": hi, "exact_lo": sketch["exact_lo"].to_numpy()[keep],
                      "node": sketch["node"].to_numpy()[keep], "loc": sketch["loc"].to_numpy()[keep]})
    return table, partition_of(hi, n_partitions)


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
