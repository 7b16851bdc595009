"""The stage's per-batch steps without Ray: tokenizing with rejects, counting, packing a group, stats."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from codemill.tokenize import batches, chunks, shards
from codemill.tokenize.pack import tag_ids
from codemill.tokenize.split import TRAIN, split_of
from codemill.tokenize.stats import whitespace_savings
from codemill.tokenize.tokenizer import EOT_ID, codegeex_tokenizer, gpt2_tokenizer


@pytest.fixture(scope="module")
def tokenizers():
    return codegeex_tokenizer(), gpt2_tokenizer()


def documents() -> pa.Table:
    texts = [f"def f{i}():\n        return {i}  # {'x' * i}\n" for i in range(40)]
    rows = [{"doc_id": f"{i:032x}", "language": "Python", "content": t} for i, t in enumerate(texts)]
    rows += [{"doc_id": "a" * 32, "language": "Makefile", "content": "all:\n"},
             {"doc_id": "b" * 32, "language": None, "content": "x"},
             {"doc_id": "c" * 32, "language": "Go", "content": ""},
             {"doc_id": "d" * 32, "language": "Go", "content": None}]
    return pa.Table.from_pylist(rows)


def test_tokenize_documents_keeps_ids_and_records_rejects(tokenizers):
    tokenizer, gpt2 = tokenizers
    table = documents()
    out = batches.tokenize_documents(table, tokenizer, gpt2, validation_fraction=0.2, sample_fraction=1.0)
    assert out.schema == batches.TOKENIZED_SCHEMA and out.num_rows == table.num_rows
    rows = out.to_pylist()
    for row, text in zip(rows[:40], table["content"].to_pylist()):
        assert row["reason"] is None and row["ids"] == tokenizer.encode(text).ids and row["n_ids"] == len(row["ids"])
        assert row["split"] == split_of(row["doc_id"], 0.2)
        assert row["gpt2_n_ids"] == len(gpt2.encode(text).ids) > row["n_ids"], "8 spaces cost GPT-2 more ids"
    assert [r["reason"] for r in rows[40:]] == [batches.REJECT_NO_TAG, batches.REJECT_NO_TAG,
                                                 batches.REJECT_EMPTY, batches.REJECT_EMPTY]
    assert all(r["ids"] == [] and r["gpt2_n_ids"] is None for r in rows[40:])
    assert batches.rejected(out).num_rows == 4 and batches.kept(out).num_rows == 40


def test_summary_counts_and_whitespace_savings(tokenizers):
    tokenizer, gpt2 = tokenizers
    out = batches.tokenize_documents(documents(), tokenizer, gpt2, validation_fraction=0.2, sample_fraction=0.5)
    summary = batches.summarize_documents(out).to_pylist()
    kept = batches.kept(out).to_pylist()
    for s in summary:
        mine = [r for r in kept if r["split"] == s["split"]]
        assert s["documents"] == len(mine) and s["doc_tokens"] == sum(r["n_ids"] for r in mine)
        sampled = [r for r in mine if r["gpt2_n_ids"] is not None]
        assert s["sample_documents"] == len(sampled)
        assert s["sample_tokens"] == sum(r["n_ids"] for r in sampled)
        assert s["sample_gpt2_tokens"] == sum(r["gpt2_n_ids"] for r in sampled)
    assert 0 < sum(s["sample_documents"] for s in summary) < len(kept), "a sample, not all documents"
    saved = whitespace_savings(summary)
    assert saved["saved_fraction"] == pytest.approx(1 - saved["tokens"] / saved["gpt2_tokens"], abs=1e-6)
    assert saved["saved_fraction"] > 0


def test_pack_documents_orders_by_doc_id_and_assigns_shards(tokenizers):
    tokenizer, _ = tokenizers
    out = batches.kept_in_chunks(batches.tokenize_documents(documents(), tokenizer, None, 0.0, 0.0), {})
    tags = {"Python": tag_ids(tokenizer, "Python").tolist()}
    reversed_order = out.take(pa.array(np.arange(out.num_rows)[::-1]))
    first_rows = {(TRAIN, "Python", 0): 0}
    a = batches.pack_documents(out, tags, EOT_ID, 64, seed=3, n_shards={TRAIN: 4}, first_rows=first_rows)
    b = batches.pack_documents(reversed_order, tags, EOT_ID, 64, seed=3, n_shards={TRAIN: 4}, first_rows=first_rows)
    assert a.equals(b), "the rows do not depend on the order documents arrive in"
    assert set(a["split"].to_pylist()) == {TRAIN} and set(a["shard"].to_pylist()) <= {0, 1, 2, 3}
    assert a.num_rows == shards.stream_rows(sum(out["n_ids"].to_pylist()), out.num_rows, len(tags["Python"]), 64)


def test_chunks_are_counted_planned_and_packed_one_per_task(tokenizers):
    tokenizer, _ = tokenizers
    tokenized = batches.tokenize_documents(documents(), tokenizer, None, 0.0, 0.0)
    n_chunks = {(TRAIN, "Python"): 3}
    docs = batches.kept_in_chunks(tokenized, n_chunks)
    assert set(docs["chunk"].to_pylist()) == {0, 1, 2}, "40 documents by hash over 3 chunks: none empty"
    counted = batches.summarize_chunks(tokenized, n_chunks).to_pylist()
    for c in counted:
        mine = docs.filter(pc.equal(docs["chunk"], c["chunk"]))
        assert c["documents"] == mine.num_rows and c["doc_tokens"] == pc.sum(mine["n_ids"]).as_py()
    tags = {"Python": tag_ids(tokenizer, "Python").tolist()}
    planned = chunks.plan(counted, {"Python": len(tags["Python"])}, 64)
    first_rows = {(c["split"], c["language"], c["chunk"]): c["first_row"] for c in planned}
    packed = [batches.pack_documents(docs.filter(pc.equal(docs["chunk"], c["chunk"])), tags, EOT_ID, 64, 3,
                                     {TRAIN: 4}, first_rows) for c in planned]
    assert [t.num_rows for t in packed] == [c["rows"] for c in planned]
    rows = np.concatenate([t["stream_row"].to_numpy() for t in packed])
    assert np.array_equal(rows, np.arange(sum(c["rows"] for c in planned))), "one stream, numbered once"
    with pytest.raises(ValueError, match="one chunk"):
        batches.pack_documents(docs, tags, EOT_ID, 64, 3, {TRAIN: 4}, first_rows)


def test_parts_number_all_chunks_densely_and_split_a_partition_by_part(tokenizers):
    tokenizer, _ = tokenizers
    tokenized = batches.tokenize_documents(documents(), tokenizer, None, 0.0, 0.0)
    n_chunks = {(TRAIN, "Go"): 2, (TRAIN, "Python"): 3}
    first = chunks.first_parts(n_chunks)
    assert first == {(TRAIN, "Go"): 0, (TRAIN, "Python"): 2}
    docs = batches.kept_in_parts(tokenized, n_chunks, first)
    assert docs["part"].to_pylist() == [c + 2 for c in docs["chunk"].to_pylist()]  # all kept docs are Python

    # each part gets its own partition, whichever side of a boundary its own key would go
    assert batches.part_boundaries([4, 2, 3, 2]) == [2.5, 3.5]
    assert batches.part_boundaries([7]) == [7.5]
    keys = np.arange(10)
    for b in batches.part_boundaries(list(keys)):
        assert not np.any(keys == b)

    shuffled = docs.take(np.random.default_rng(0).permutation(docs.num_rows))
    groups = list(batches.each_part(shuffled))
    assert [g["part"][0].as_py() for g in groups] == [2, 3, 4]
    assert all(pc.count_distinct(g["part"]).as_py() == 1 for g in groups)
    assert sum(g.num_rows for g in groups) == docs.num_rows
    one = docs.filter(pc.equal(docs["part"], 3))
    assert list(batches.each_part(one))[0] is one, "a partition of one part is passed on whole"
    assert list(batches.each_part(docs.slice(0, 0))) == []
