"""ShardReader: O(1) zero-copy rows, gathers, metadata and rank slices of a local tokenize output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from codemill.tokenize.pack import write_shards_from_texts
from codemill.tokenize.reader import ShardReader
from codemill.tokenize.split import TRAIN, VALIDATION

SEQ = 96


def corpus() -> dict[str, list[str]]:
    return {"Python": [f"def f{i}(x):\n    return x * {i}\n" * (i % 7 + 1) for i in range(300)],
            "Java": [f"class A{i} {{\n    int x = {i};\n}}\n" * (i % 5 + 1) for i in range(200)]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    manifest = write_shards_from_texts(corpus(), str(out), seq_len=SEQ, validation_fraction=0.05,
                                       shard_bytes=40 * SEQ * 2)
    return out, manifest


def all_rows(out, manifest, split=TRAIN) -> pa.Table:
    return pa.concat_tables(pa.ipc.open_file(pa.memory_map(str(out / s["path"]))).read_all()
                            for s in manifest["splits"][split]["shards"])


def test_rows_are_zero_copy_views_in_global_order(dataset):
    out, manifest = dataset
    r = ShardReader(str(out), split=TRAIN)
    expected = all_rows(out, manifest)
    assert len(r) == expected.num_rows == manifest["splits"][TRAIN]["rows"] and r.seq_len == SEQ
    assert len(manifest["splits"][TRAIN]["shards"]) > 2
    ids = expected["input_ids"].combine_chunks().flatten().to_numpy().reshape(-1, SEQ)
    for i in range(len(r)):
        row = r[i]
        assert row.dtype == np.uint16 and row.shape == (SEQ,)
        np.testing.assert_array_equal(row, ids[i])
    view = r[len(r) - 1]
    assert not view.flags.owndata and not view.flags.writeable, "a view of the read-only mapping"
    with pytest.raises(IndexError, match="out of range"):
        r[len(r)]


def test_metadata_of_each_row(dataset):
    out, manifest = dataset
    r = ShardReader(str(out), split=TRAIN)
    expected = all_rows(out, manifest).to_pylist()
    for i in (0, 1, len(r) // 2, len(r) - 1):
        assert r.language(i) == expected[i]["language"]
        assert r.n_tokens(i) == expected[i]["n_tokens"]
        assert r.doc_starts(i).dtype == np.int32
        assert r.doc_starts(i).tolist() == expected[i]["doc_starts"]
        assert r.doc_ids(i) == expected[i]["doc_ids"]
        assert r.first_continues(i) == expected[i]["first_continues"]


def test_gather_rows_matches_single_access(dataset):
    out, _ = dataset
    r = ShardReader(str(out), split=TRAIN)
    idx = np.random.default_rng(0).integers(0, len(r), size=200)
    batch = r.rows(idx)
    assert batch.shape == (200, SEQ) and batch.dtype == np.uint16
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(batch[k], r[i])
    assert r.rows(np.array([], dtype=np.int64)).shape == (0, SEQ)
    with pytest.raises(IndexError, match="row indices must be in"):
        r.rows(np.array([0, len(r)]))


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_rank_indices_cover_every_row_once_per_epoch(dataset, world_size):
    out, _ = dataset
    r = ShardReader(str(out), split=TRAIN)
    parts = [r.rank_indices(rank, world_size, epoch=0, seed=5) for rank in range(world_size)]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(r)))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert np.array_equal(parts[0], r.rank_indices(0, world_size, epoch=0, seed=5)), "deterministic"
    if len(r) > 10:
        assert not np.array_equal(parts[0], r.rank_indices(0, world_size, epoch=1, seed=5)), "new order per epoch"


def test_pickles_as_a_reference_to_the_files(dataset):
    import pickle

    out, _ = dataset
    r = ShardReader(str(out), split=TRAIN)
    data = pickle.dumps(r)
    assert len(data) < 1000, "the rows are not copied into the pickle"
    again = pickle.loads(data)
    assert len(again) == len(r) and np.array_equal(again[7], r[7])


def test_validation_split_and_tokenizer(dataset):
    from tokenizers import Tokenizer

    out, manifest = dataset
    v = ShardReader(str(out), split=VALIDATION)
    assert len(v) == manifest["splits"][VALIDATION]["rows"] > 0
    tokenizer = Tokenizer.from_file(v.tokenizer_path)
    text = tokenizer.decode(v[0][:v.n_tokens(0)].tolist(), skip_special_tokens=False)
    assert text.startswith(f"# language: {v.language(0)}\n") or text.startswith(f"// language: {v.language(0)}\n")
    with pytest.raises(ValueError, match="split must be one of"):
        ShardReader(str(out), split="test")
