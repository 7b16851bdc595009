"""Packing documents into tagged rows, the validation split, the shuffle, and the shard files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from codemill.tokenize import chunks, shards
from codemill.tokenize.pack import SEQ_LEN, chunk_members, pack_chunks, pack_stream, tag_ids, write_shards_from_texts
from codemill.tokenize.split import TRAIN, VALIDATION, shuffle_keys, split_of
from codemill.tokenize.tokenizer import EOT_ID, codegeex_tokenizer

TAG = np.array([7, 8, 9], dtype=np.uint16)


def random_docs(rng: np.random.Generator, n: int, max_len: int) -> list[np.ndarray]:
    return [rng.integers(0, EOT_ID, size=rng.integers(0, max_len), dtype=np.uint16) for _ in range(n)]


def content_of(table: pa.Table, tag_len: int) -> np.ndarray:
    """The rows' ids without tags and padding, in stream order."""
    rows = table["input_ids"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    n_tokens = table["n_tokens"].to_numpy()
    return np.concatenate([row[tag_len:n] for row, n in zip(rows, n_tokens)])


@pytest.mark.parametrize("seq_len, max_doc", [(16, 40), (64, 5), (SEQ_LEN, 5000)])
def test_packing_loses_and_duplicates_nothing(seq_len, max_doc):
    rng = np.random.default_rng(seq_len)
    docs = random_docs(rng, 300, max_doc)
    table = pack_stream(docs, [f"d{i}" for i in range(len(docs))], "C", TAG, TRAIN, seed=0, seq_len=seq_len)
    expected = np.concatenate([np.append(d, EOT_ID) for d in docs]).astype(np.uint16)
    np.testing.assert_array_equal(content_of(table, len(TAG)), expected)
    rows = table["input_ids"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, seq_len)
    assert (rows[:, :len(TAG)] == TAG).all(), "every row starts with its tag"
    n_tokens = table["n_tokens"].to_numpy()
    assert (n_tokens[:-1] == seq_len).all(), "only the last row of a stream is padded"
    assert (rows[-1, n_tokens[-1]:] == EOT_ID).all()
    assert table.num_rows == -(-len(expected) // (seq_len - len(TAG)))


def test_rows_trace_back_to_their_documents():
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 50, 30)
    names = [f"doc{i}" for i in range(len(docs))]
    table = pack_stream(docs, names, "Go", TAG, TRAIN, seed=0, seq_len=20)
    rebuilt: dict[str, list[int]] = {n: [] for n in names}
    previous = None
    for row in table.to_pylist():
        ids, starts, owners = row["input_ids"], row["doc_starts"], row["doc_ids"]
        assert starts == sorted(starts) and starts[0] == len(TAG) and len(starts) == len(owners)
        assert row["first_continues"] == (owners[0] == previous)
        ends = starts[1:] + [row["n_tokens"]]
        for owner, start, end in zip(owners, starts, ends):
            rebuilt[owner].extend(ids[start:end])
        previous = owners[-1]
    for name, doc in zip(names, docs):
        assert rebuilt[name] == doc.tolist() + [EOT_ID]


def chunked(docs: list[np.ndarray], names: list[str], chunk_tokens: int):
    lengths = np.array([len(d) for d in docs])
    return [([docs[k] for k in m], [names[k] for k in m]) for m in chunk_members(names, lengths, chunk_tokens)]


def test_a_chunked_stream_is_its_chunks_packed_one_after_another():
    rng = np.random.default_rng(7)
    docs = random_docs(rng, 400, 60)
    names = [f"doc{i:04d}" for i in range(len(docs))]
    parts = chunked(docs, names, chunk_tokens=2_000)
    assert len(parts) == chunks.chunk_count(sum(map(len, docs)) + len(docs), 2_000) > 5
    tables = list(pack_chunks(parts, "C", TAG, TRAIN, seed=0, seq_len=16))
    table = pa.concat_tables(tables)
    expected = np.concatenate([np.append(d, EOT_ID) for part, _ in parts for d in part]).astype(np.uint16)
    np.testing.assert_array_equal(content_of(table, len(TAG)), expected)
    assert np.array_equal(table["stream_row"].to_numpy(), np.arange(table.num_rows)), "rows numbered across chunks"
    assert np.array_equal(table["shuffle_key"].to_numpy(), shuffle_keys(0, TRAIN, "C", table.num_rows)), \
        "the same keys as the stream packed whole"
    for t in tables:  # the last-row rule, per chunk
        n_tokens = t["n_tokens"].to_numpy()
        assert (n_tokens[:-1] == 16).all()
    padded = int((table["n_tokens"].to_numpy() < 16).sum())
    assert 1 < padded <= len(parts), "at most one padded row per chunk"
    whole = pack_stream([d for part, _ in parts for d in part], [n for _, part in parts for n in part],
                        "C", TAG, TRAIN, seed=0, seq_len=16)
    assert 0 < table.num_rows - whole.num_rows <= len(parts) - 1, "each chunk but the last adds a row at most"


def test_one_chunk_packs_exactly_as_the_whole_stream():
    rng = np.random.default_rng(8)
    docs = random_docs(rng, 200, 60)
    names = sorted(f"doc{i:04d}" for i in range(len(docs)))
    parts = chunked(docs, names, chunk_tokens=chunks.CHUNK_TOKENS)
    assert len(parts) == 1
    (table,) = pack_chunks(parts, "C", TAG, TRAIN, seed=0, seq_len=16)
    assert table.equals(pack_stream(docs, names, "C", TAG, TRAIN, seed=0, seq_len=16))


def test_chunks_are_bounded_by_the_chunk_size():
    # Real code's sizes are heavy-tailed: lognormal, median ~500 ids, mean ~1,000, some of 50k. A chunk's
    # size spreads by about sqrt(e^(1.2^2) / documents per chunk): 3% for the 4,000 documents of a chunk
    # here, 1.6% for the ~16,000 of a default chunk of 16M ids.
    rng = np.random.default_rng(9)
    lengths = np.minimum(rng.lognormal(np.log(500), 1.2, size=60_000).astype(np.int64), 50_000)
    names = [f"{i:032x}" for i in range(len(lengths))]
    chunk_tokens = 4_000_000
    members = chunk_members(names, lengths, chunk_tokens)
    sizes = [int(lengths[m].sum()) + len(m) for m in members]
    assert len(members) == chunks.chunk_count(int(lengths.sum()) + len(lengths), chunk_tokens) >= 15
    assert max(sizes) <= 1.15 * chunk_tokens, "a hash range holds about its share of the stream"
    assert sorted(np.concatenate(members)) == list(range(len(names))), "every document in exactly one chunk"


def test_packing_holds_one_chunk_at_a_time():
    rng = np.random.default_rng(10)
    docs = random_docs(rng, 300, 60)
    names = [f"doc{i:04d}" for i in range(len(docs))]
    parts = chunked(docs, names, chunk_tokens=1_000)
    taken = []

    def one_by_one():
        for k, part in enumerate(parts):
            taken.append(k)
            yield part

    packed = pack_chunks(one_by_one(), "C", TAG, TRAIN, seed=0, seq_len=16)
    for k, rows in enumerate(packed):
        assert taken == list(range(k + 1)), "the next chunk is taken only once this one's rows are handed on"
        assert set(sum(rows["doc_ids"].to_pylist(), [])) == set(parts[k][1]), "a chunk's rows hold its documents only"
    assert len(taken) == len(parts) > 5


def test_chunking_keeps_rows_per_token_within_a_thousandth():
    # The bound: one extra row per chunk at most, against chunk_tokens / (seq_len - tag) rows per chunk.
    # At the default (16M ids, rows of 2,049) that is 0.012%; here the same ratio, at a size a test can pack.
    rng = np.random.default_rng(11)
    docs = random_docs(rng, 6_000, 80)
    names = [f"doc{i:05d}" for i in range(len(docs))]
    chunk_tokens = 40_000
    parts = chunked(docs, names, chunk_tokens)
    chunked_rows = sum(t.num_rows for t in pack_chunks(parts, "C", TAG, TRAIN, seed=0, seq_len=64))
    whole_rows = shards.stream_rows(sum(map(len, docs)), len(docs), len(TAG), 64)
    assert len(parts) > 5 and (64 - len(TAG)) / chunk_tokens < 1e-3 * 2
    assert 0 <= chunked_rows / whole_rows - 1 < 1e-3
    assert (SEQ_LEN - 6) / chunks.CHUNK_TOKENS < 1e-3 / 5, "the default chunk keeps the bound with room"


def test_the_plan_numbers_chunks_as_packing_does():
    rng = np.random.default_rng(12)
    docs = random_docs(rng, 400, 60)
    names = [f"doc{i:04d}" for i in range(len(docs))]
    parts = chunked(docs, names, chunk_tokens=2_000)
    counts = [{"split": TRAIN, "language": "C", "chunk": k, "documents": len(part),
               "doc_tokens": sum(map(len, part))} for k, (part, _) in enumerate(parts)]
    planned = chunks.plan(counts[::-1], {"C": len(TAG)}, 16)
    tables = list(pack_chunks(parts, "C", TAG, TRAIN, seed=0, seq_len=16))
    assert [c["rows"] for c in planned] == [t.num_rows for t in tables]
    assert [c["first_row"] for c in planned] == [int(t["stream_row"][0].as_py()) for t in tables]
    stats = chunks.packing_stats(planned, [{"split": TRAIN, "language": "C", "documents": len(docs),
                                            "doc_tokens": sum(map(len, docs))}], {"C": len(TAG)}, 16, 2_000)
    assert stats["chunks"] == len(parts) and stats["streams"] == 1
    assert stats["rows"] == sum(t.num_rows for t in tables) == stats["rows_unchunked"] + stats["extra_rows"]


def test_a_tag_longer_than_a_row_is_refused():
    with pytest.raises(ValueError, match="tag"):
        pack_stream([np.arange(3, dtype=np.uint16)], ["a"], "C", np.arange(8, dtype=np.uint16), TRAIN, 0, seq_len=8)


def test_tags_are_the_languages_tag_lines():
    tokenizer = codegeex_tokenizer()
    assert tokenizer.decode(tag_ids(tokenizer, "Python").tolist()) == "# language: Python\n"
    assert tokenizer.decode(tag_ids(tokenizer, "HTML").tolist()) == "<!--language: HTML-->\n"


def test_validation_split_is_deterministic_and_near_its_fraction():
    ids = [f"{i:032x}" for i in range(200_000)]
    first = [split_of(d, 0.005) for d in ids]
    assert first == [split_of(d, 0.005) for d in ids]
    share = first.count(VALIDATION) / len(ids)
    assert 0.004 < share < 0.006
    assert all(split_of(d, 0.0) == TRAIN for d in ids[:1000])
    # a larger fraction holds out a superset: documents never move from validation back to train
    assert all(split_of(d, 0.05) == VALIDATION for d, s in zip(ids, first) if s == VALIDATION)


def test_shuffle_keys_are_deterministic_distinct_and_seeded():
    a = shuffle_keys(0, TRAIN, "C", 100_000)
    assert np.array_equal(a, shuffle_keys(0, TRAIN, "C", 100_000))
    assert len(np.unique(a)) == len(a)
    assert not np.array_equal(a[:100], shuffle_keys(1, TRAIN, "C", 100))
    assert not np.array_equal(a[:100], shuffle_keys(0, TRAIN, "Go", 100))
    shard = shards.shard_of_keys(a, 8)
    counts = np.bincount(shard, minlength=8)
    assert counts.min() > 0.9 * len(a) / 8 and counts.max() < 1.1 * len(a) / 8
    order = np.argsort(a)
    assert (np.diff(shard[order]) >= 0).all(), "range partition: shards in order hold keys in order"


def test_shard_count_follows_the_target_size():
    assert shards.shard_count(0, SEQ_LEN) == 1
    assert shards.shard_count(1000, SEQ_LEN, shard_bytes=1000 * SEQ_LEN * 2) == 1
    assert shards.shard_count(1001, SEQ_LEN, shard_bytes=1000 * SEQ_LEN * 2) == 2


def test_written_shards_hold_every_row_once_sorted_by_key(tmp_path):
    texts = {"Python": [f"def f{i}():\n    return {i}\n" * (i % 50 + 1) for i in range(400)],
             "C": [f"int g{i}(void) {{\n\treturn {i};\n}}\n" * (i % 30 + 1) for i in range(300)]}
    settings = {"seq_len": 128, "validation_fraction": 0.05, "shard_bytes": 60 * 128 * 2, "chunk_tokens": 5_000}
    manifest = write_shards_from_texts(texts, str(tmp_path), **settings)
    again = write_shards_from_texts(texts, str(tmp_path / "again"), **settings)
    assert manifest == again
    for entry in manifest["splits"][TRAIN]["shards"]:
        assert (tmp_path / entry["path"]).read_bytes() == (tmp_path / "again" / entry["path"]).read_bytes()
    train = manifest["splits"][TRAIN]
    assert train["padded_rows"] == sum(c["padded_rows"] for c in train["languages"].values()) > 2, \
        "Python and C are packed in several chunks, each with its padded last row"
    assert len(train["shards"]) > 1 and manifest["splits"][VALIDATION]["rows"] > 0
    assert train["documents"] + manifest["splits"][VALIDATION]["documents"] == 700
    tables = [pa.ipc.open_file(pa.memory_map(str(tmp_path / s["path"]))).read_all() for s in train["shards"]]
    for t, entry in zip(tables, train["shards"]):
        assert t.num_rows == entry["rows"] and t.schema == shards.row_schema(128)
        assert (np.diff(t["shuffle_key"].to_numpy().astype(np.float64)) > 0).all()
    keys = np.concatenate([t["shuffle_key"].to_numpy() for t in tables])
    assert (np.diff(keys.astype(np.float64)) > 0).all(), "all rows of the split, globally in key order"
    assert sum(t.num_rows for t in tables) == train["rows"]
    languages = np.concatenate([t["language"].combine_chunks().dictionary_decode().to_numpy(zero_copy_only=False)
                                for t in tables])
    assert set(languages) == {"Python", "C"} and (languages[:20] != languages[0]).any(), "languages are mixed"
    tokenizer = codegeex_tokenizer()
    for language, counts in train["languages"].items():
        tag_len = len(tag_ids(tokenizer, language))
        assert counts["tokens"] == counts["rows"] * tag_len + counts["doc_tokens"] + counts["documents"]
