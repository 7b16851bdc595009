"""The tokenize stage on Ray: dedup's `kept/` documents -> packed, shuffled Arrow IPC shards.

    read kept/ Parquet ─▶ map_batches(tokenize, a task per batch on one CPU) ─▶ materialize
        ├─▶ per (split, language) counts ─▶ chunks per stream, whitespace savings (driver; a few numbers)
        ├─▶ per (split, language, chunk) counts ─▶ each chunk's first row, shard counts (driver; one per chunk)
        ├─▶ rejected documents with their reason ─▶ rejected/
        └─▶ sort by chunk number, one chunk per partition ─▶ pack ─▶ sort by shard number, one shard per
            partition ─▶ sort rows + write

Packing takes one chunk of a (split, language) stream per task (`codemill.tokenize.chunks`: `chunk_tokens`
ids on average, chosen by the hash of doc_id), so a packing worker holds one chunk, however large a
language grows. Each row gets a random key at packing time and each shard a range of keys, so the global
shuffle is a Ray Data shuffle by shard number and no process ever holds more than one shard's rows. The
driver holds counts: one per stream and one per chunk.

Outputs under --out: `shards/`, `tokenizer.json`, `manifest.json` (the dataset: `codemill.tokenize.shards`),
`rejected/` (doc_id, language, reason), `stats.json`, `tokens_per_language.png`, then `_manifest.json`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator

import pyarrow as pa

from codemill import storage
from codemill.languages import BY_NAME, LANGUAGE_NAMES
from codemill.runner import StageRun
from codemill.stages import DEDUP_KEPT, TOKENIZE_FIGURE, TOKENIZE_REJECTED
from codemill.tokenize import batches, chunks, shards
from codemill.tokenize.config import TokenizeConfig
from codemill.tokenize.pack import tag_ids
from codemill.tokenize.split import TRAIN, split_of
from codemill.tokenize.stats import tokenize_stats, tokens_per_language, tokens_per_language_png
from codemill.tokenize.tokenizer import EOT

log = logging.getLogger("codemill.tokenize")

# Documents per task of the passes that only count over the tokenized documents: many blocks per task, since
# a task costs more to schedule than counting one block of `batch_docs` documents does.
COUNT_BATCH_DOCS = 16_384


@functools.lru_cache(maxsize=4)
def _worker_tokenizers(tokenizer_json: str, with_gpt2: bool):
    """The tokenizers of this worker process, built once and kept for its later tasks. The default
    CodeGeeX tokenizer is encoded by the faster tiktoken-based encoder (same ids; see fast_encoder)."""
    from tokenizers import Tokenizer

    from codemill.tokenize.fast_encoder import FastCodeGeeXEncoder
    from codemill.tokenize.tokenizer import codegeex_tokenizer, gpt2_tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    if tokenizer.to_str() == codegeex_tokenizer().to_str():
        tokenizer = FastCodeGeeXEncoder()
    return tokenizer, gpt2_tokenizer() if with_gpt2 else None


def tokenize_task(batch: pa.Table, tokenizer_json: str, validation_fraction: float,
                  sample_fraction: float) -> pa.Table:
    """A Ray Data task: one batch of documents tokenized on this task's one CPU.

    Tasks rather than an actor pool: actors would hold every CPU from the start and starve the Parquet
    reads that feed them."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # Ray gives each task one CPU; Rust must not use more
    tokenizer, gpt2 = _worker_tokenizers(tokenizer_json, sample_fraction > 0)
    return batches.tokenize_documents(batch, tokenizer, gpt2, validation_fraction, sample_fraction)


def pack_partition(block: pa.Table, tags: dict[str, list[int]], eot_id: int, seq_len: int, seed: int,
                   n_shards: dict[str, int], first_rows: dict[tuple[str, str, int], int],
                   first_shard: dict[str, int]) -> pa.Table:
    """A shuffle partition of documents (one chunk: its `part`) -> its packed rows, each with `part` now the
    number of its shard among all splits' shards (`first_shard` of its split + its shard)."""
    out = []
    for docs in batches.each_part(block):
        rows = batches.pack_documents(docs.drop_columns([batches.PART]), tags, eot_id, seq_len, seed, n_shards,
                                      first_rows)
        first = first_shard[rows["split"][0].as_py()] if rows.num_rows else 0
        out.append(rows.append_column(batches.PART, pa.array(rows["shard"].to_numpy() + first, pa.int64())))
    return pa.concat_tables(out) if out else batches.packed_schema(seq_len).empty_table()


def write_shard_partition(block: pa.Table, out: str) -> pa.Table:
    """A shuffle partition of rows (one shard: its `part`) -> the shard file; its record as a one-row table."""
    records = [json.dumps(shards.write_shard(rows, out, rows["split"][0].as_py(), rows["shard"][0].as_py()))
               for rows in batches.each_part(block)]
    return pa.table({"record": pa.array(records, pa.string())})


def training_texts(kept_uri: str, config: TokenizeConfig) -> Iterator[str]:
    """The train split's documents a new BPE learns from (held-out documents never are), in input order."""
    limit = config.tokenizer.train.max_documents
    for batch in storage.iter_parquet_batches(kept_uri, columns=batches.INPUT_COLUMNS):
        for doc_id, language, content in zip(*(batch.column(c).to_pylist() for c in batches.INPUT_COLUMNS)):
            if content and language in BY_NAME and split_of(doc_id, config.validation_fraction) == TRAIN:
                yield content
                limit -= 1
                if limit == 0:
                    return


def build_tokenizer(config: TokenizeConfig, kept_uri: str):
    from codemill.tokenize.tokenizer import codegeex_tokenizer, train_codegeex_style_tokenizer

    if config.tokenizer.train is None:
        return codegeex_tokenizer()
    train = config.tokenizer.train
    log.info("tokenize: training a byte-level BPE of %d ids on up to %d documents", train.vocab_size,
             train.max_documents)
    return train_codegeex_style_tokenizer(training_texts(kept_uri, config), train.vocab_size, train.min_frequency)


def merged_summary(table: pa.Table, keys: tuple[str, ...] = ("split", "language")) -> list[dict]:
    """Per-batch counts summed per `keys` (the table's other columns are the counts)."""
    if not table.num_rows:
        return []
    sums = [name for name in table.column_names if name not in keys]
    grouped = table.group_by(list(keys)).aggregate([(name, "sum") for name in sums])
    return [{**{k: row[k] for k in keys}, **{name: row[f"{name}_sum"] for name in sums}}
            for row in grouped.to_pylist()]


def shard_counts(planned: list[dict], config: TokenizeConfig) -> dict[str, int]:
    rows: Counter[str] = Counter()
    for c in planned:
        rows[c["split"]] += c["rows"]
    return {split: shards.shard_count(n, config.seq_len, config.shard_bytes) for split, n in rows.items()}


def body(run: StageRun) -> dict:
    from ray.data.context import ShuffleStrategy

    from codemill.raysupport import run_data_stage

    # The shuffles move a few large blocks between few groups: the task-based sort shuffle reuses the
    # workers already started, where the default starts aggregator actors (measured: 7.5 s against 1.4 s
    # for 20 MB of code, benchmarks/tokenize_throughput.py).
    return run_data_stage(run, _tokenize, shuffle_strategy=ShuffleStrategy.SORT_SHUFFLE_PULL_BASED)


def _tokenize(run: StageRun) -> dict:
    import ray

    from codemill.raysupport import collect_table

    config: TokenizeConfig = run.config
    started = time.time()
    kept_uri = run.input_path("input", DEDUP_KEPT)
    tokenizer = build_tokenizer(config, kept_uri)
    tags = {language: tag_ids(tokenizer, language).tolist() for language in LANGUAGE_NAMES}
    run.clear(shards.SHARDS_DIR, TOKENIZE_REJECTED, shards.MANIFEST_FILE)

    in_fs, in_path = storage.filesystem(kept_uri)
    docs = ray.data.read_parquet(in_path, filesystem=in_fs).select_columns(batches.INPUT_COLUMNS)
    tokenized = docs.map_batches(
        tokenize_task, fn_args=(tokenizer.to_str(), config.validation_fraction, config.whitespace_sample_fraction),
        batch_size=config.batch_docs, batch_format="pyarrow", num_cpus=1).materialize()
    tokenized_s = time.time() - started

    def collect(fn, schema: pa.Schema, *args) -> pa.Table:
        """A small table computed over the tokenized documents, many blocks per task."""
        return collect_table(tokenized.map_batches(fn, fn_args=args, batch_format="pyarrow",
                                                   batch_size=COUNT_BATCH_DOCS), schema)

    summary = merged_summary(collect(batches.summarize_documents, batches.SUMMARY_SCHEMA))
    doc_tokens = sum(s["doc_tokens"] for s in summary)
    log.info("tokenize: %d documents, %d tokens in %.1f s (%.0f tokens/s)", sum(s["documents"] for s in summary),
             doc_tokens, tokenized_s, doc_tokens / max(tokenized_s, 1e-9))
    rejected = collect(batches.rejected, batches.REJECTED_SCHEMA)
    storage.write_table(rejected, run.path(TOKENIZE_REJECTED, "part-00000.parquet"))

    n_chunks = chunks.stream_chunk_counts(summary, config.chunk_tokens)
    chunk_summary = merged_summary(collect(batches.summarize_chunks, batches.CHUNK_SUMMARY_SCHEMA, n_chunks),
                                   keys=("split", "language", "chunk"))
    tag_lens = {language: len(tag) for language, tag in tags.items()}
    planned = chunks.plan(chunk_summary, tag_lens, config.seq_len)
    n_shards = shard_counts(planned, config)
    first_rows = {(c["split"], c["language"], c["chunk"]): c["first_row"] for c in planned}
    # Both shuffles partition on a dense number (`part`: a chunk, then a shard, among all of them) with a
    # boundary between each two numbers, so each reduce task gets exactly one chunk or one shard. A sort on
    # sampled boundaries (what groupby does) makes as many partitions as input blocks instead: at 1M
    # documents in blocks of 256, 3,906 maps x 3,906 reduces, each reduce task taking 3,906 pieces, and its
    # memory grew with the corpus. The documents enter the first shuffle in blocks of COUNT_BATCH_DOCS.
    first_part = chunks.first_parts(n_chunks)
    parts = [first_part[(c["split"], c["language"])] + c["chunk"] for c in planned]
    first_shard, total = {}, 0
    for split in sorted(n_shards):
        first_shard[split], total = total, total + n_shards[split]
    pack_args = (tags, tokenizer.token_to_id(EOT), config.seq_len, config.seed, n_shards, first_rows, first_shard)
    records_ds = (tokenized.map_batches(batches.kept_in_parts, fn_args=(n_chunks, first_part), batch_format="pyarrow",
                                        batch_size=COUNT_BATCH_DOCS)
                  .sort(batches.PART, boundaries=batches.part_boundaries(parts))
                  .map_batches(pack_partition, fn_args=pack_args, batch_format="pyarrow", batch_size=None)
                  .sort(batches.PART, boundaries=batches.part_boundaries(list(range(total))))
                  .map_batches(write_shard_partition, fn_args=(run.out,), batch_format="pyarrow", batch_size=None))
    records = [json.loads(r["record"]) for r in records_ds.take_all()] if n_shards else []
    manifest = shards.write_dataset_files(run.out, tokenizer, config.seq_len, records, config.seed,
                                          config.validation_fraction, tags)
    seconds = time.time() - started

    packing = chunks.packing_stats(planned, summary, tag_lens, config.seq_len, config.chunk_tokens)
    stats = tokenize_stats(manifest, summary, dict(Counter(rejected["reason"].to_pylist())), seconds, packing)
    tokenized_documents = sum(s["documents"] for s in summary)
    stats["documents"] = {"input": tokenized.count(), "tokenized": tokenized_documents, "rejected": rejected.num_rows}
    stats["throughput"]["tokenize_seconds"] = round(tokenized_s, 3)
    run.write_stats(stats)
    storage.write_bytes(run.path(TOKENIZE_FIGURE), tokens_per_language_png(tokens_per_language(manifest)))
    counts = {f"{split}_{key}": manifest["splits"][split][key]
              for split in manifest["splits"] for key in ("rows", "tokens", "documents")}
    counts.update({"documents_in": stats["documents"]["input"], "rejected": rejected.num_rows, "shards": len(records),
                   "chunks": len(planned), "padded_rows": stats["packing"]["padded_rows"],
                   "tokenizer_sha256": manifest["tokenizer"]["sha256"],
                   "whitespace_saved_fraction": stats["whitespace"]["saved_fraction"]})
    return counts
