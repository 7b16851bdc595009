"""The two passes over the input files, one step per file: sketch it (spilling its sketch rows by
chunk, its band and exact-key rows by shuffle partition, and its contaminated documents), and later
write its kept rows. A document's locator (locators.py) is its file and row, so the kept-writer needs
only its own file's removed locators."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codemill import storage
from codemill.dedup import graph as gr
from codemill.dedup import sketch as sk
from codemill.dedup import spill
from codemill.dedup.locators import chunk_of, locators, row_of
from codemill.dedup.resolve import DUPLICATES_SCHEMA, KIND_CONTAMINATION

# Sketch rows buffered before a spill. Each spill writes its rows into their chunk's group (a chunk may get
# several files), so this bounds only the sketch task's memory, not the chunk size: a 65,536-row buffer
# (one chunk) held a whole 50k-document input file's sketches (~1.2 KB each with the signature) and then the
# spill's band rows and sorted copies on top: the sketch task peaked at 459 MiB at 100k documents (the
# dedup's largest process; datatrove's largest: 249 MiB), 325 MiB with 8,192 rows (eight 1,024-document
# batches, ~10 MB of sketches plus the spill's copies). More, smaller spill files; the same rows.
SPILL_ROWS = 8192


@dataclass(frozen=True)
class SketchPlan:
    params: sk.SketchParams
    graph: gr.GraphPlan
    docs_per_batch: int
    bands: int
    rows: int
    band_partitions: int
    exact_partitions: int
    near: bool  # False: exact keys only


# The input columns a sketch reads (sketch.sketch_batch; a missing optional one becomes nulls).
SKETCH_INPUT_COLUMNS = ["doc_id", "content", "repo_stars", "path", "language"]
# Input files are read through a buffer of this many bytes per column instead of a whole row group's
# compressed column chunks at once: a filter-stage file is one 50,000-row row group (~45 MB of compressed
# content), which the sketch and kept-writer tasks would otherwise hold while reading it batch by batch
# (at 100k documents: the sketch task 325 -> 259 MiB, the kept-writer 339 -> 288 MiB).
READ_BUFFER_BYTES = 1 << 20


def _parquet_file(handle) -> pq.ParquetFile:
    return pq.ParquetFile(handle, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)


def _batches(uri: str, batch_size: int) -> Iterator[pa.Table]:
    fs, path = storage.filesystem(uri)
    with fs.open_input_file(path) as handle:
        source = _parquet_file(handle)
        columns = [c for c in SKETCH_INPUT_COLUMNS if c in source.schema_arrow.names]
        for batch in source.iter_batches(batch_size=batch_size, columns=columns):
            yield pa.Table.from_batches([batch])


def contamination_rows(sketch: pa.Table) -> pa.Table:
    n = sketch.num_rows
    grams = np.maximum(sketch["contamination_ngrams"].to_numpy(), 1)
    return pa.table({
        "doc_id": sketch["doc_id"], "cluster_id": pa.nulls(n, pa.int64()),
        "kept_doc_id": pa.nulls(n, pa.string()), "kind": pa.array([KIND_CONTAMINATION] * n, pa.string()),
        "similarity": pa.array(sketch["contamination_hits"].to_numpy() / grams, pa.float64()),
        "language": sketch["language"], "benchmark_task_id": sketch["contamination_task_id"],
    }, schema=DUPLICATES_SCHEMA)


def _spill(plan: SketchPlan, sketch: pa.Table, file_index: int, part: int) -> dict:
    writer = f"{file_index:06d}-{part:06d}"
    min_matches = plan.params.min_matches
    work = plan.graph
    if plan.near:
        rows, partition = sk.band_rows(sketch, plan.bands, plan.rows, plan.band_partitions, min_matches)
        spill.write_groups(rows, partition, work.dir(gr.BANDS), writer)
    rows, partition = sk.exact_rows(sketch, plan.exact_partitions, min_matches)
    spill.write_groups(rows, partition, work.dir(gr.EXACT), writer)
    keep = sk.deduplicable(sketch, min_matches)
    kept = sketch.filter(pa.array(keep)).select(gr.SKETCH_COLUMNS)
    spill.write_groups(kept, chunk_of(kept["loc"].to_numpy()), work.dir(gr.SKETCH), writer)
    contaminated = sketch.filter(pa.array(sk.contaminated(sketch, min_matches)))
    if contaminated.num_rows:
        storage.write_table(contamination_rows(contaminated),
                            storage.join(work.duplicates, f"contamination-{writer}.parquet"))
        spill.write_groups(contaminated.select(["loc"]), np.full(contaminated.num_rows, file_index),
                           work.dir(gr.REMOVED), f"contamination-{writer}")
    return {"chunks": np.unique(chunk_of(kept["loc"].to_numpy())).tolist(),
            "removed": gr.removed_counts(contamination_rows(contaminated))}


def sketch_file(plan: SketchPlan, uri: str, file_index: int) -> dict:
    """Sketch one input file a batch at a time, spilling every SPILL_ROWS rows. Returns its row count,
    chunks, per-language summary and contaminated documents per (language, kind)."""
    pending: list[pa.Table] = []
    summaries: list[pa.Table] = []
    result = {"rows": 0, "chunks": set(), "removed": {}}
    part = 0

    def flush() -> None:
        nonlocal part
        spilled = _spill(plan, pa.concat_tables(pending), file_index, part)
        result["chunks"].update(spilled["chunks"])
        for key, n in spilled["removed"].items():
            result["removed"][key] = result["removed"].get(key, 0) + n
        pending.clear()
        part += 1

    for batch in _batches(uri, plan.docs_per_batch):
        sketch = sk.sketch_batch(batch, plan.params)
        sketch = sketch.append_column("loc", pa.array(locators(file_index, result["rows"], sketch.num_rows)))
        result["rows"] += sketch.num_rows
        summaries.append(sk.language_summary(sketch))
        pending.append(sketch)
        if sum(t.num_rows for t in pending) >= SPILL_ROWS:
            flush()
    if pending:
        flush()
    summary = sk.merge_language_summaries(pa.concat_tables(summaries)) if summaries \
        else sk.LANGUAGE_SUMMARY_SCHEMA.empty_table()
    return {**result, "chunks": sorted(result["chunks"]), "summary": summary}


def write_kept(plan: gr.GraphPlan, uri: str, file_index: int, out_uri: str, batch_size: int) -> int:
    """Copy one input file to `out_uri` without its removed rows (every column kept). Returns the rows kept."""
    removed = np.sort(row_of(spill.read_group(plan.dir(gr.REMOVED), file_index, gr.REMOVED_SCHEMA)["loc"].to_numpy()))
    in_fs, in_path = storage.filesystem(uri)
    out_fs, out_path = storage.filesystem(out_uri)
    storage.makedirs(storage.parent(out_uri)[0])
    kept, first_row = 0, 0
    with in_fs.open_input_file(in_path) as handle:
        source = _parquet_file(handle)
        with out_fs.open_output_stream(out_path) as sink, \
                pq.ParquetWriter(sink, source.schema_arrow, compression=storage.PARQUET_COMPRESSION) as writer:
            for batch in source.iter_batches(batch_size=batch_size):
                rows = np.arange(first_row, first_row + batch.num_rows)
                first_row += batch.num_rows
                batch = pa.Table.from_batches([batch]).filter(pc.invert(pa.array(np.isin(rows, removed))))
                writer.write_table(batch)
                kept += batch.num_rows
    return kept
