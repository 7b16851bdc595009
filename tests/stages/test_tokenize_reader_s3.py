"""ShardReader on a tokenize output in S3: cached locally, then memory-mapped."""

from __future__ import annotations

import numpy as np

from codemill import storage
from codemill.tokenize.pack import write_shards_from_texts
from codemill.tokenize.reader import ShardReader
from codemill.tokenize.split import TRAIN

SEQ = 96


def corpus() -> dict[str, list[str]]:
    return {"Python": [f"def f{i}(x):\n    return x * {i}\n" * (i % 7 + 1) for i in range(300)],
            "Java": [f"class A{i} {{\n    int x = {i};\n}}\n" * (i % 5 + 1) for i in range(200)]}


def test_s3_output_is_cached_then_mapped(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/run/tokenize"
    manifest = write_shards_from_texts(corpus(), uri, seq_len=SEQ, validation_fraction=0.05, shard_bytes=40 * SEQ * 2)
    local = tmp_path / "local"
    write_shards_from_texts(corpus(), str(local), seq_len=SEQ, validation_fraction=0.05, shard_bytes=40 * SEQ * 2)
    cache = tmp_path / "cache"
    r = ShardReader(uri, split=TRAIN, cache_dir=cache)
    expected = ShardReader(str(local), split=TRAIN)
    assert len(r) == len(expected) == manifest["splits"][TRAIN]["rows"]
    np.testing.assert_array_equal(r.rows(np.arange(len(r))), expected.rows(np.arange(len(expected))))
    cached = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    assert len({p.parts[0] for p in cached}) == 1, "one folder, named by the manifest hash"
    assert len(cached) == 1 + len(manifest["splits"][TRAIN]["shards"]), "tokenizer.json + the split's shards"
    assert r.tokenizer_path.startswith(str(cache))
    # a second reader uses the cache: the bucket's shards may be gone
    for entry in manifest["splits"][TRAIN]["shards"]:
        storage.delete_file(f"{uri}/{entry['path']}")
    again = ShardReader(uri, split=TRAIN, cache_dir=cache)
    np.testing.assert_array_equal(again[3], r[3])
