"""The token shard format: Arrow IPC files of packed rows, plus `tokenizer.json` and `manifest.json`.

Layout under the tokenize stage's output:

    shards/train-00000.arrow ...       rows of the train split, ~256 MB each
    shards/validation-00000.arrow ...  rows of the held-out documents
    tokenizer.json                     the tokenizer that made the ids (loads with `tokenizers` alone)
    manifest.json                      seq_len, the tokenizer's hash, the shards, rows and tokens per split
                                       and per language

A shard is an uncompressed Arrow IPC file (so it can be memory-mapped and read without copies) of one
record batch with the columns of `row_schema`:

    input_ids        fixed_size_list<uint16>[seq_len]  tag ids, stream ids, `<|endoftext|>` padding
    language         dictionary<int8, string>          over the 23 languages of SPEC §2
    n_tokens         int32                             ids before the padding (the loss ignores the rest)
    doc_starts       list<int32>                       offset in the row where each document piece starts
    doc_ids          list<string>                      the document of each piece (aligned with doc_starts)
    first_continues  bool                              the first piece continues a document of an earlier row
    stream_row       int64                             the row's index in its (split, language) stream
    shuffle_key      uint64                            the row's place in the global shuffle

Rows are shuffled by range-partitioning `shuffle_key` over the shards of a split and sorting each shard by
it, so the shards read in name order are all rows sorted by key: one deterministic global permutation,
made without ever collecting the rows in one place.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codemill import storage
from codemill.languages import LANGUAGE_NAMES
from codemill.stages import TOKENIZE_DATASET, TOKENIZE_SHARDS, TOKENIZE_TOKENIZER

SHARDS_DIR = TOKENIZE_SHARDS
SHARD_SUFFIX = ".arrow"
TOKENIZER_FILE = TOKENIZE_TOKENIZER
MANIFEST_FILE = TOKENIZE_DATASET
FORMAT = "codemill-token-shards"
FORMAT_VERSION = 1
SHARD_BYTES = 256 * 2**20  # target size of one shard
ID_TYPE = pa.uint16()

_LANGUAGES = pa.array(LANGUAGE_NAMES, pa.string())
LANGUAGE_TYPE = pa.dictionary(pa.int8(), pa.string())


def row_schema(seq_len: int) -> pa.Schema:
    return pa.schema([
        ("input_ids", pa.list_(ID_TYPE, seq_len)), ("language", LANGUAGE_TYPE), ("n_tokens", pa.int32()),
        ("doc_starts", pa.list_(pa.int32())), ("doc_ids", pa.list_(pa.string())),
        ("first_continues", pa.bool_()), ("stream_row", pa.int64()), ("shuffle_key", pa.uint64()),
    ])


def row_table(rows: np.ndarray, language: str, n_tokens: np.ndarray, doc_starts: pa.ListArray,
              doc_ids: pa.ListArray, first_continues: np.ndarray, shuffle_key: np.ndarray,
              first_row: int = 0) -> pa.Table:
    """Rows `first_row ..` of one language's stream as a table of `row_schema` (the ids are not copied)."""
    n_rows, seq_len = rows.shape
    stream_row = np.arange(first_row, first_row + n_rows, dtype=np.int64)
    input_ids = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), ID_TYPE), seq_len)
    code = LANGUAGE_NAMES.index(language)
    languages = pa.DictionaryArray.from_arrays(pa.array(np.full(n_rows, code, np.int8)), _LANGUAGES)
    return pa.Table.from_arrays(
        [input_ids, languages, pa.array(n_tokens, pa.int32()), doc_starts, doc_ids,
         pa.array(first_continues, pa.bool_()), pa.array(stream_row), pa.array(shuffle_key, pa.uint64())],
        schema=row_schema(seq_len))


def row_bytes(seq_len: int) -> int:
    return seq_len * ID_TYPE.byte_width


def stream_rows(doc_tokens: int, documents: int, tag_len: int, seq_len: int) -> int:
    """How many rows a stream (or a packing chunk) of documents packs into: its ids plus one separator per
    document, `seq_len - tag_len` of them per row."""
    return -(-(doc_tokens + documents) // (seq_len - tag_len))


def shard_count(n_rows: int, seq_len: int, shard_bytes: int = SHARD_BYTES) -> int:
    return max(1, math.ceil(n_rows * row_bytes(seq_len) / shard_bytes))


def shard_of_keys(keys: np.ndarray, n_shards: int | np.ndarray) -> np.ndarray:
    """Range partition of uint64 keys into `n_shards` equal key ranges (monotonic in the key); `n_shards` may
    be one count per key (packing chunks: each stream has its own count)."""
    high = np.asarray(keys, dtype=np.uint64) >> np.uint64(32)
    return ((high * np.asarray(n_shards, dtype=np.uint64)) >> np.uint64(32)).astype(np.int64)


def shard_path(split: str, index: int) -> str:
    """A shard's path relative to the stage output."""
    return f"{SHARDS_DIR}/{split}-{index:05d}{SHARD_SUFFIX}"


def write_shard(rows: pa.Table, out: str, split: str, index: int) -> dict:
    """Sort `rows` (of `row_schema`) by shuffle key and write them as one shard; returns its record for the
    manifest: path, rows, bytes, and rows, tokens and documents begun per language."""
    schema = row_schema(rows.schema.field("input_ids").type.list_size)
    rows = rows.select(schema.names).cast(schema)  # whatever a shuffle made of the types, the file has these
    rows = rows.take(pc.sort_indices(rows["shuffle_key"])).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, rows.schema) as writer:
        writer.write_table(rows, max_chunksize=max(1, rows.num_rows))
    data = sink.getvalue()
    path = shard_path(split, index)
    storage.write_bytes(storage.join(out, path), data.to_pybytes())
    return {"split": split, "path": path, "rows": rows.num_rows, "bytes": data.size,
            "languages": _per_language(rows)}


def _per_language(rows: pa.Table) -> dict[str, dict[str, int]]:
    codes = rows["language"].combine_chunks().indices.to_numpy(zero_copy_only=False)
    tokens = rows["n_tokens"].to_numpy()
    padded = tokens < rows.schema.field("input_ids").type.list_size
    # A row begins one document per piece, except a first piece that continues an earlier row's.
    begun = pc.list_value_length(rows["doc_ids"]).to_numpy() - rows["first_continues"].to_numpy(zero_copy_only=False)
    return {LANGUAGE_NAMES[c]: {"rows": int((codes == c).sum()), "tokens": int(tokens[codes == c].sum()),
                                "documents": int(begun[codes == c].sum()),
                                "padded_rows": int(padded[codes == c].sum())}
            for c in np.unique(codes)}


def split_summary(records: list[dict], tags: dict[str, list[int]], seq_len: int) -> dict:
    """Rows, tokens, documents, document tokens, padding and padded rows (at most one per packing chunk) of
    one split, in all and per language."""
    languages: dict[str, dict[str, int]] = {}
    for record in records:
        for language, c in record["languages"].items():
            acc = languages.setdefault(language, {"rows": 0, "tokens": 0, "documents": 0, "padded_rows": 0})
            for key in acc:
                acc[key] += c[key]
    for language, acc in languages.items():
        # tokens = tags + the documents' ids + one <|endoftext|> after each document
        acc["doc_tokens"] = acc["tokens"] - acc["rows"] * len(tags[language]) - acc["documents"]
        acc["padding"] = acc["rows"] * seq_len - acc["tokens"]
    totals = {key: sum(acc[key] for acc in languages.values())
              for key in ("rows", "tokens", "documents", "doc_tokens", "padding", "padded_rows")}
    ordered = sorted(records, key=lambda r: r["path"])
    return {**totals, "languages": dict(sorted(languages.items())),
            "shards": [{"path": r["path"], "rows": r["rows"], "bytes": r["bytes"]} for r in ordered]}


def dataset_manifest(tokenizer, seq_len: int, shard_records: list[dict], seed: int,
                     validation_fraction: float, tags: dict[str, list[int]]) -> dict:
    """The content of `manifest.json`, from the written shards' records."""
    from codemill.tokenize.split import SPLITS
    from codemill.tokenize.tokenizer import EOT, tokenizer_sha256

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "seq_len": seq_len, "dtype": str(ID_TYPE),
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": tokenizer_sha256(tokenizer),
                      "vocab_size": tokenizer.get_vocab_size(), "eot_id": tokenizer.token_to_id(EOT)},
        "seed": seed, "validation_fraction": validation_fraction, "tags": tags,
        "splits": {split: split_summary([r for r in shard_records if r["split"] == split], tags, seq_len)
                   for split in SPLITS},
    }


def write_dataset_files(out: str, tokenizer, seq_len: int, shard_records: list[dict], seed: int,
                        validation_fraction: float, tags: dict[str, list[int]]) -> dict:
    """Write `tokenizer.json`, then `manifest.json` (last: it names only shards already written)."""
    storage.write_bytes(storage.join(out, TOKENIZER_FILE), tokenizer.to_str().encode())
    manifest = dataset_manifest(tokenizer, seq_len, shard_records, seed, validation_fraction, tags)
    storage.write_json(storage.join(out, MANIFEST_FILE), manifest)
    return manifest


def manifest_hash(manifest_bytes: bytes) -> str:
    """Names a dataset version (the reader's cache key)."""
    return hashlib.sha256(manifest_bytes).hexdigest()[:16]


def read_manifest_bytes(out: str) -> bytes:
    uri = storage.join(out, MANIFEST_FILE)
    if not storage.exists(uri):
        raise FileNotFoundError(f"{uri} does not exist: {out} is not a finished tokenize output")
    return storage.read_bytes(uri)


def parse_manifest(data: bytes) -> dict:
    manifest = json.loads(data)
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"manifest.json is not {FORMAT} v{FORMAT_VERSION}: "
                         f"{manifest.get('format')} v{manifest.get('format_version')}")
    return manifest
