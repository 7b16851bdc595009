"""The tokenize stage's steps as functions of Arrow tables (no Ray): what each Ray Data task runs.

1. `tokenize_documents`: a batch of documents -> one row per document: its split, ids, and the reason it
   was rejected, if it was (bad input is kept and counted, never dropped silently).
2. `summarize_documents`: per (split, language) counts, from which the driver measures what the whitespace
   tokens save and how many chunks each stream is cut into (`codemill.tokenize.chunks`).
3. `summarize_chunks`: per (split, language, chunk) counts, from which the driver numbers each chunk's rows
   in its stream and sizes the shards.
4. `kept_in_chunks` + `pack_documents`: the documents of one chunk -> packed rows, each with its shard.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codemill.languages import BY_NAME
from codemill.tokenize.chunks import chunk_of_keys
from codemill.tokenize.pack import pack_stream
from codemill.tokenize.shards import shard_of_keys
from codemill.tokenize.split import chunk_key, in_stats_sample, split_of
from codemill.tokenize.tokenizer import TOKEN_ID_DTYPE

INPUT_COLUMNS = ["doc_id", "language", "content"]
PART = "part"  # the dense partition number the stage's shuffles partition on (one chunk, or one shard, each)

REJECT_EMPTY = "empty content"
REJECT_NO_TAG = "language without a tag"
REJECT_UNENCODABLE = "not encodable"

TOKENIZED_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("language", pa.string()), ("split", pa.string()),
    ("ids", pa.large_list(pa.uint16())), ("n_ids", pa.int64()),
    ("gpt2_n_ids", pa.int64()),  # plain GPT-2's count, for documents in the statistics sample
    ("reason", pa.string()),     # null when the document is kept
    ("chunk_key", pa.uint64()),  # which packing chunk of its stream it joins (`chunks.chunk_of_keys`)
])


def _encode_each(tokenizer, texts: list[str]) -> list[list[int] | None]:
    """Ids per text; a text the tokenizer refuses gives None (the batch is retried one text at a time)."""
    try:
        return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    except Exception:
        out: list[list[int] | None] = []
        for text in texts:
            try:
                out.append(tokenizer.encode(text, add_special_tokens=False).ids)
            except Exception:
                out.append(None)
        return out


def tokenize_documents(batch: pa.Table, tokenizer, gpt2, validation_fraction: float,
                       sample_fraction: float) -> pa.Table:
    """One row of `TOKENIZED_SCHEMA` per input document (`INPUT_COLUMNS`)."""
    doc_ids = batch.column("doc_id").to_pylist()
    languages = batch.column("language").to_pylist()
    contents = batch.column("content").to_pylist()
    reasons: list[str | None] = [None] * len(doc_ids)
    for k, (language, content) in enumerate(zip(languages, contents)):
        if language not in BY_NAME:
            reasons[k] = REJECT_NO_TAG  # the row's language column says which
        elif not content:
            reasons[k] = REJECT_EMPTY
    todo = [k for k, r in enumerate(reasons) if r is None]
    encoded: list[list[int]] = [[] for _ in doc_ids]
    for k, ids in zip(todo, _encode_each(tokenizer, [contents[k] for k in todo])):
        if ids is None:
            reasons[k] = REJECT_UNENCODABLE
        else:
            encoded[k] = ids
    gpt2_counts: list[int | None] = [None] * len(doc_ids)
    sampled = [k for k in todo if reasons[k] is None and in_stats_sample(doc_ids[k], sample_fraction)]
    if gpt2 is not None and sampled:
        for k, ids in zip(sampled, _encode_each(gpt2, [contents[k] for k in sampled])):
            gpt2_counts[k] = None if ids is None else len(ids)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=TOKEN_ID_DTYPE, count=int(offsets[-1]))
    return pa.Table.from_arrays([
        pa.array(doc_ids, pa.string()), pa.array(languages, pa.string()),
        pa.array([split_of(d, validation_fraction) for d in doc_ids], pa.string()),
        pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(flat, pa.uint16())),
        pa.array(lengths, pa.int64()), pa.array(gpt2_counts, pa.int64()), pa.array(reasons, pa.string()),
        pa.array(np.fromiter(map(chunk_key, doc_ids), dtype=np.uint64, count=len(doc_ids)), pa.uint64()),
    ], schema=TOKENIZED_SCHEMA)


REJECTED_SCHEMA = pa.schema([("doc_id", pa.string()), ("language", pa.string()), ("reason", pa.string())])


def kept(tokenized: pa.Table) -> pa.Table:
    return tokenized.filter(pc.is_null(tokenized["reason"]))


def rejected(tokenized: pa.Table) -> pa.Table:
    return tokenized.filter(pc.is_valid(tokenized["reason"])).select(REJECTED_SCHEMA.names)


SUMMARY_SCHEMA = pa.schema([
    ("split", pa.string()), ("language", pa.string()), ("documents", pa.int64()), ("doc_tokens", pa.int64()),
    ("sample_documents", pa.int64()), ("sample_tokens", pa.int64()), ("sample_gpt2_tokens", pa.int64()),
])


def summarize_documents(tokenized: pa.Table) -> pa.Table:
    """Per (split, language) of the kept documents: count, ids, and the statistics sample's two counts."""
    docs = kept(tokenized).select(["split", "language", "n_ids", "gpt2_n_ids"])
    in_sample = pc.is_valid(docs["gpt2_n_ids"])
    docs = docs.append_column("sample_tokens", pc.if_else(in_sample, docs["n_ids"], 0))
    docs = docs.append_column("in_sample", pc.cast(in_sample, pa.int64()))
    grouped = docs.group_by(["split", "language"]).aggregate([
        ("n_ids", "count"), ("n_ids", "sum"), ("in_sample", "sum"), ("sample_tokens", "sum"), ("gpt2_n_ids", "sum")])
    return pa.Table.from_arrays([
        grouped["split"], grouped["language"], grouped["n_ids_count"], grouped["n_ids_sum"],
        grouped["in_sample_sum"], grouped["sample_tokens_sum"], pc.fill_null(grouped["gpt2_n_ids_sum"], 0),
    ], schema=SUMMARY_SCHEMA)


CHUNK_SUMMARY_SCHEMA = pa.schema([
    ("split", pa.string()), ("language", pa.string()), ("chunk", pa.int64()), ("documents", pa.int64()),
    ("doc_tokens", pa.int64()),
])


def kept_in_chunks(tokenized: pa.Table, n_chunks: dict[tuple[str, str], int]) -> pa.Table:
    """The kept documents with their packing chunk (`chunk`), given the chunks of each (split, language)."""
    docs = kept(tokenized)
    counts = np.ones(docs.num_rows, dtype=np.uint64)
    for (split, language), n in n_chunks.items():
        if n > 1:
            in_stream = pc.and_(pc.equal(docs["split"], split), pc.equal(docs["language"], language))
            counts[in_stream.to_numpy(zero_copy_only=False)] = n
    chunk = chunk_of_keys(docs["chunk_key"].to_numpy(), counts)
    return docs.append_column("chunk", pa.array(chunk, pa.int64()))


def kept_in_parts(tokenized: pa.Table, n_chunks: dict[tuple[str, str], int],
                  first_part: dict[tuple[str, str], int]) -> pa.Table:
    """`kept_in_chunks` plus `part`: the chunk's number among all chunks (`first_part` of its stream + its
    chunk), the key the stage partitions on so that each shuffle partition holds one chunk."""
    docs = kept_in_chunks(tokenized, n_chunks)
    offsets = np.zeros(docs.num_rows, dtype=np.int64)
    for (split, language), first in first_part.items():
        if first:
            in_stream = pc.and_(pc.equal(docs["split"], split), pc.equal(docs["language"], language))
            offsets[in_stream.to_numpy(zero_copy_only=False)] = first
    part = offsets + docs["chunk"].to_numpy()
    return docs.append_column(PART, pa.array(part, pa.int64()))


def summarize_chunks(tokenized: pa.Table, n_chunks: dict[tuple[str, str], int]) -> pa.Table:
    """Per (split, language, chunk) of the kept documents: count and ids."""
    docs = kept_in_chunks(tokenized, n_chunks).select(["split", "language", "chunk", "n_ids"])
    grouped = docs.group_by(["split", "language", "chunk"]).aggregate([("n_ids", "count"), ("n_ids", "sum")])
    return pa.Table.from_arrays([grouped["split"], grouped["language"], grouped["chunk"], grouped["n_ids_count"],
                                 grouped["n_ids_sum"]], schema=CHUNK_SUMMARY_SCHEMA)


def pack_documents(docs: pa.Table, tags: dict[str, list[int]], eot_id: int, seq_len: int, seed: int,
                   n_shards: dict[str, int], first_rows: dict[tuple[str, str, int], int]) -> pa.Table:
    """The packed rows of one chunk of kept documents (`kept_in_chunks`), in doc_id order (so the result
    does not depend on how the documents reached this task), numbered from the chunk's first row in its
    stream (`first_rows`, from `chunks.plan`), with their `split` and `shard`. A task is given one chunk
    and nothing more: that is what bounds its memory, so a group of several is refused."""
    group = ["split", "language", "chunk"]
    if any(pc.count_distinct(docs[c]).as_py() != 1 for c in group):
        raise ValueError(f"a packing task takes the documents of one chunk, got several {group} groups")
    split, language, chunk = (docs[c][0].as_py() for c in group)
    docs = docs.take(pc.sort_indices(docs["doc_id"]))
    ids = docs["ids"].combine_chunks()
    values = ids.values.to_numpy(zero_copy_only=False)
    offsets = ids.offsets.to_numpy()
    streams = [values[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]
    rows = pack_stream(streams, docs["doc_id"].to_pylist(), language, np.asarray(tags[language], TOKEN_ID_DTYPE),
                       split, seed, seq_len, eot_id, first_rows[(split, language, chunk)])
    shard = shard_of_keys(rows["shuffle_key"].to_numpy(), n_shards[split])
    return rows.append_column("split", pa.array([split] * rows.num_rows, pa.string())) \
               .append_column("shard", pa.array(shard, pa.int64()))


def each_part(block: pa.Table) -> Iterator[pa.Table]:
    """The rows of each `part` of a shuffle partition, in part order. The stage's partitions hold one part
    each (their boundaries are the parts themselves); this only makes the result independent of that."""
    if not block.num_rows:
        return
    parts = block[PART].to_numpy()
    if parts.min() == parts.max():
        yield block
        return
    block = block.take(pc.sort_indices(block[PART]))
    parts = block[PART].to_numpy()
    starts = np.flatnonzero(np.diff(parts)) + 1
    for start, end in zip([0, *starts.tolist()], [*starts.tolist(), len(parts)]):
        yield block.slice(start, end - start)


def part_boundaries(parts: list[int]) -> list[float]:
    """Sort boundaries that give each of `parts` (distinct ints) a shuffle partition of its own: halfway
    between neighbours, so a part never shares a partition whichever side a boundary's own key falls on."""
    ordered = sorted(set(parts))
    if len(ordered) == 1:  # no boundaries would mean sampled ones: one above the part (an empty partition)
        return [ordered[0] + 0.5]
    return [p - 0.5 for p in ordered[1:]]


def packed_schema(seq_len: int) -> pa.Schema:
    """What `pack_documents` returns, with the `part` (shard number) the stage's second shuffle adds."""
    from codemill.tokenize.shards import row_schema

    return pa.schema([*row_schema(seq_len), pa.field("split", pa.string()), pa.field("shard", pa.int64()),
                      pa.field(PART, pa.int64())])
