"""Packing: a language's documents, joined by `<|endoftext|>`, cut into rows that each start with the tag.

A row holds `seq_len` ids (2,049: the model reads 2,048 and predicts the next of each, SPEC §4):
the language's tag tokens, then the next `seq_len - len(tag)` ids of the stream
`doc_1 EOT doc_2 EOT ... doc_n EOT`. A document that does not fit continues in the next row, after that
row's tag. A stream is packed in chunks of bounded size (`codemill.tokenize.chunks`), each like a stream of
its own: only the last row of a chunk is padded, with `<|endoftext|>`, and `n_tokens` says where its
content ends. Each row records where its document pieces start and which documents they come from.

`write_shards_from_texts` runs the whole tokenize stage in one process, without Ray: for tests (the train
stage's too) and small corpora.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from codemill.languages import tag_line
from codemill.tokenize import chunks, shards
from codemill.tokenize.split import VALIDATION_FRACTION, chunk_key, shuffle_keys, split_of
from codemill.tokenize.tokenizer import EOT_ID, TOKEN_ID_DTYPE

SEQ_LEN = 2049  # 2,048 tokens read + the one predicted after the last (SPEC §4)


def tag_ids(tokenizer, language: str) -> np.ndarray:
    """The ids of a language's tag line (SPEC §2), newline included."""
    return np.asarray(tokenizer.encode(tag_line(language), add_special_tokens=False).ids, dtype=TOKEN_ID_DTYPE)


def pack_stream(docs: Sequence[np.ndarray], doc_ids: Sequence[str], language: str, tag: np.ndarray,
                split: str, seed: int, seq_len: int = SEQ_LEN, eot_id: int = EOT_ID, first_row: int = 0) -> pa.Table:
    """The rows of one language's documents (in the given order), as a table of `shards.row_schema`;
    numbered from `first_row` in the language's stream (a chunk's rows follow the chunks before it)."""
    if len(docs) != len(doc_ids):
        raise ValueError(f"{len(docs)} documents but {len(doc_ids)} doc_ids")
    width = seq_len - len(tag)  # stream ids per row
    if width <= 0:
        raise ValueError(f"the {language} tag takes {len(tag)} ids, more than a row of {seq_len}")
    if not docs:
        return shards.row_schema(seq_len).empty_table()

    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))  # + EOT
    starts = np.concatenate([[0], np.cumsum(lengths)])
    total = int(starts[-1])
    n_rows = -(-total // width)
    stream = np.full(n_rows * width, eot_id, dtype=TOKEN_ID_DTYPE)  # the tail stays EOT: padding
    for doc, start in zip(docs, starts[:-1]):
        stream[start:start + len(doc)] = doc
    rows = np.empty((n_rows, seq_len), dtype=TOKEN_ID_DTYPE)
    rows[:, :len(tag)] = tag
    rows[:, len(tag):] = stream.reshape(n_rows, width)
    n_tokens = len(tag) + np.minimum(width, total - np.arange(n_rows, dtype=np.int64) * width)

    # A piece is the part of one document inside one row; pieces come out in row order.
    doc_first_row = starts[:-1] // width
    doc_last_row = (starts[1:] - 1) // width
    per_doc = doc_last_row - doc_first_row + 1
    piece_doc = np.repeat(np.arange(len(docs)), per_doc)
    within_doc = np.arange(per_doc.sum()) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    piece_row = np.repeat(doc_first_row, per_doc) + within_doc
    row_begin = piece_row * width
    piece_start = len(tag) + np.maximum(starts[piece_doc], row_begin) - row_begin
    offsets = np.concatenate([[0], np.cumsum(np.bincount(piece_row, minlength=n_rows))]).astype(np.int32)
    first_continues = starts[piece_doc[offsets[:-1]]] < np.arange(n_rows) * width

    return shards.row_table(
        rows, language=language, n_tokens=n_tokens.astype(np.int32),
        doc_starts=pa.ListArray.from_arrays(offsets, pa.array(piece_start.astype(np.int32))),
        doc_ids=pa.ListArray.from_arrays(offsets, pa.array(np.asarray(doc_ids, dtype=object)[piece_doc], pa.string())),
        first_continues=first_continues, shuffle_key=shuffle_keys(seed, split, language, n_rows, first_row),
        first_row=first_row)


def chunk_members(doc_ids: Sequence[str], lengths: np.ndarray, chunk_tokens: int) -> list[np.ndarray]:
    """The documents of each non-empty chunk of one stream (indices into `doc_ids`, in their order), in chunk
    order: what the stage's groups of (split, language, chunk) hold. `lengths`: each document's ids."""
    n = chunks.chunk_count(int(lengths.sum()) + len(doc_ids), chunk_tokens)
    keys = np.fromiter(map(chunk_key, doc_ids), dtype=np.uint64, count=len(doc_ids))
    chunk = chunks.chunk_of_keys(keys, n)
    return [members for c in range(n) if len(members := np.flatnonzero(chunk == c))]


def pack_chunks(stream_chunks: Iterable[tuple[Sequence[np.ndarray], Sequence[str]]], language: str,
                tag: np.ndarray, split: str, seed: int, seq_len: int = SEQ_LEN,
                eot_id: int = EOT_ID) -> Iterator[pa.Table]:
    """The rows of one stream given as its chunks' (documents, doc_ids), one table per chunk: a chunk is
    taken from the iterable only after the previous chunk's rows are handed on, so no more than one chunk's
    documents and rows are held here at a time; rows are numbered across the chunks."""
    first_row = 0
    for docs, doc_ids in stream_chunks:
        rows = pack_stream(docs, doc_ids, language, tag, split, seed, seq_len, eot_id, first_row)
        first_row += rows.num_rows
        yield rows


def text_doc_id(language: str, index: int, text: str) -> str:
    """A stable id for a document given as bare text (no repository or path)."""
    return hashlib.sha256(f"{language}\x00{index}\x00{text}".encode()).hexdigest()[:32]


def write_shards_from_texts(texts_by_language: dict[str, Sequence[str]], out_dir: str, tokenizer=None,
                            seq_len: int = SEQ_LEN, validation_fraction: float = VALIDATION_FRACTION,
                            seed: int = 0, shard_bytes: int = shards.SHARD_BYTES,
                            chunk_tokens: int = chunks.CHUNK_TOKENS) -> dict:
    """The tokenize stage's output (shards, `tokenizer.json`, `manifest.json`) from plain texts, in this
    process, without Ray; `out_dir` may be local or s3://. Documents get ids from `text_doc_id`, are
    split, chunked, packed and shuffled exactly as the stage does. Returns the dataset manifest."""
    from codemill.tokenize.tokenizer import EOT, codegeex_tokenizer, encode_texts

    tokenizer = tokenizer or codegeex_tokenizer()
    eot_id = tokenizer.token_to_id(EOT)
    tables: dict[str, list[pa.Table]] = defaultdict(list)
    for language, texts in texts_by_language.items():
        ids = [text_doc_id(language, i, t) for i, t in enumerate(texts)]
        encoded = [np.asarray(e, dtype=TOKEN_ID_DTYPE) for e in encode_texts(tokenizer, list(texts))]
        by_split: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for doc_id, doc in sorted(zip(ids, encoded), key=lambda pair: pair[0]):
            docs, names = by_split[split_of(doc_id, validation_fraction)]
            docs.append(doc)
            names.append(doc_id)
        tag = tag_ids(tokenizer, language)
        for split, (docs, names) in sorted(by_split.items()):
            lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
            members = chunk_members(names, lengths, chunk_tokens)
            stream_chunks = (([docs[k] for k in m], [names[k] for k in m]) for m in members)
            tables[split].extend(pack_chunks(stream_chunks, language, tag, split, seed, seq_len, eot_id))
    shard_records = []
    for split in sorted(tables):
        rows = pa.concat_tables(tables[split])
        n_shards = shards.shard_count(rows.num_rows, seq_len, shard_bytes)
        index = shards.shard_of_keys(rows["shuffle_key"].to_numpy(), n_shards)
        for k in np.unique(index):
            part = rows.filter(pa.array(index == k))
            shard_records.append(shards.write_shard(part, out_dir, split, int(k)))
    return shards.write_dataset_files(out_dir, tokenizer, seq_len, shard_records,
                                      seed=seed, validation_fraction=validation_fraction,
                                      tags={lang: tag_ids(tokenizer, lang).tolist() for lang in texts_by_language})

