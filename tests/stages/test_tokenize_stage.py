"""The tokenize stage end to end on a real local Ray: dedup-shaped input -> shards read back through the
reader, every document recovered from its rows; local and s3:// outputs; rejected input recorded."""

from __future__ import annotations

import hashlib
import json
import pathlib
import sysconfig

import numpy as np
import pyarrow as pa

from codemill import manifest as mf
from codemill import storage
from codemill.crawl.schema import make_doc_id
from codemill.filter.schema import KEPT_SCHEMA
from codemill.tokenize.reader import ShardReader
from codemill.tokenize.split import TRAIN, VALIDATION
from codemill.tokenize.tokenizer import codegeex_tokenizer, decode

# chunks of 200k ids: Python's ~700k ids are packed in several chunks, the other streams in one each
SETTINGS = ["--set", "shard_mb=0.5", "--set", "validation_fraction=0.05", "--set", "batch_docs=64",
            "--set", "chunk_tokens=200000"]


def real_python(n: int = 240) -> list[str]:
    root = pathlib.Path(sysconfig.get_paths()["purelib"]) / "ray" / "data"
    files = sorted(p for p in root.rglob("*.py") if 1024 <= p.stat().st_size <= 60_000)
    return [p.read_text() for p in files[:n]]


def dedup_output(root: pathlib.Path) -> tuple[str, pa.Table]:
    """A finished dedup stage's output: `kept/` Parquet with the files schema plus `language`."""
    docs = [("Python", f"org/py{i}", f"m{i}.py", text) for i, text in enumerate(real_python())]
    docs += [("Go", "org/go", f"g{i}.go", f"package main\n\nfunc f{i}() int {{\n\treturn {i}\n}}\n" * (i % 9 + 1))
             for i in range(120)]
    docs += [("C++", "org/cc", f"c{i}.cpp", f"int f{i}() {{\r\n    return {i};  \r\n}}\r\n" * (i % 13 + 1))
             for i in range(80)]
    docs += [("Makefile", "org/mk", "Makefile", "all:\n\tcc x.c\n"), (None, "org/x", "x", "text"),
             ("Python", "org/empty", "empty.py", "")]
    rows = []
    for language, repo, path, text in docs:
        sha = hashlib.sha256(text.encode()).hexdigest()
        rows.append({"doc_id": make_doc_id(repo, path, sha), "repo": repo, "path": path,
                     "ext": pathlib.Path(path).suffix, "content": text, "size_bytes": len(text.encode()),
                     "sha256": sha, "encoding": "utf-8", "repo_stars": 1, "repo_language": language,
                     "language": language})
    table = pa.Table.from_pylist(rows, schema=KEPT_SCHEMA)
    out = root / "dedup"
    storage.write_table(table.slice(0, 200), str(out / "kept" / "part-0.parquet"))
    storage.write_table(table.slice(200), str(out / "kept" / "part-1.parquet"))
    mf.write_manifest(str(out), mf.Manifest(stage="dedup", status=mf.STATUS_COMPLETE, config_hash="x", config={}))
    return str(out), table


def recovered_documents(out: str, cache) -> dict[str, str]:
    """Every document's text, rebuilt from the rows of both splits through the reader: its pieces in the
    order of their rows in the language's stream."""
    tokenizer = codegeex_tokenizer()
    pieces: dict[str, list[tuple[int, np.ndarray]]] = {}
    begun: dict[str, int] = {}
    for split in (TRAIN, VALIDATION):
        reader = ShardReader(out, split=split, cache_dir=cache)
        for i in range(len(reader)):
            row, starts, owners = reader[i], reader.doc_starts(i), reader.doc_ids(i)
            ends = list(starts[1:]) + [reader.n_tokens(i)]
            for k, (owner, start, end) in enumerate(zip(owners, starts, ends)):
                pieces.setdefault(owner, []).append((reader.stream_row(i), row[start:end]))
                if k > 0 or not reader.first_continues(i):
                    begun[owner] = begun.get(owner, 0) + 1
    assert set(begun) == set(pieces) and set(begun.values()) == {1}, "each document begins exactly once"
    texts = {}
    for owner, parts in pieces.items():
        ids = np.concatenate([ids for _, ids in sorted(parts, key=lambda p: p[0])])
        assert ids[-1] == 50256, "each document ends with <|endoftext|>"
        texts[owner] = decode(tokenizer, ids[:-1].tolist())
    return texts


def run_stage(input_uri: str, out: str, *extra: str) -> int:
    from codemill.runner import stage_main

    return stage_main("tokenize", ["--input", input_uri, "--out", out, *SETTINGS, *extra])


def test_stage_local_output(ray_session, tmp_path):
    input_uri, table = dedup_output(tmp_path)
    out = str(tmp_path / "tokenize")
    assert run_stage(input_uri, out) == 0

    manifest = json.loads((tmp_path / "tokenize" / "manifest.json").read_text())
    train, validation = manifest["splits"][TRAIN], manifest["splits"][VALIDATION]
    assert len(train["shards"]) > 1 and validation["rows"] > 0
    assert set(train["languages"]) == {"Python", "Go", "C++"}

    kept = {r["doc_id"]: r["content"] for r in table.to_pylist() if r["language"] in ("Python", "Go", "C++") and r["content"]}
    assert train["documents"] + validation["documents"] == len(kept)
    assert recovered_documents(out, tmp_path / "cache") == kept

    rejected = storage.read_table(str(tmp_path / "tokenize" / "rejected"))
    assert sorted(zip(rejected["reason"].to_pylist(), rejected["language"].to_pylist()), key=str) == [
        ("empty content", "Python"), ("language without a tag", "Makefile"), ("language without a tag", None)]
    stats = json.loads((tmp_path / "tokenize" / "stats.json").read_text())
    assert stats["rejected"] == {"empty content": 1, "language without a tag": 2}
    assert stats["whitespace"]["sample_documents"] > 0 and stats["whitespace"]["saved_fraction"] > 0.05
    packing = stats["packing"]
    assert packing["chunks"] > packing["streams"] == 6, "Python's train stream is cut into chunks"
    assert packing["padded_rows"] == train["padded_rows"] + validation["padded_rows"] <= packing["chunks"]
    assert packing["rows"] == train["rows"] + validation["rows"] == packing["rows_unchunked"] + packing["extra_rows"]
    assert 0 < packing["extra_rows"] < packing["chunks"]
    assert (tmp_path / "tokenize" / "tokens_per_language.png").read_bytes()[:4] == b"\x89PNG"
    complete = mf.read_manifest(out)
    assert complete.status == mf.STATUS_COMPLETE and complete.counts["rejected"] == 3

    # rows are deterministic: a second output with the same seed is the same, another seed is not
    again = str(tmp_path / "again")
    assert run_stage(input_uri, again) == 0
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (tmp_path / "tokenize" / "manifest.json").read_bytes()
    for entry in train["shards"] + validation["shards"]:
        assert (tmp_path / "again" / entry["path"]).read_bytes() == (tmp_path / "tokenize" / entry["path"]).read_bytes()
    a = ShardReader(out)
    reseeded = str(tmp_path / "reseeded")
    assert run_stage(input_uri, reseeded, "--set", "seed=1") == 0
    c = ShardReader(reseeded)
    assert len(c) == len(a) and not np.array_equal(c.rows(np.arange(len(c))), a.rows(np.arange(len(a))))


def test_stage_s3_output_and_trained_tokenizer(ray_session, s3_bucket, tmp_path):
    input_uri, table = dedup_output(tmp_path)
    out = f"{s3_bucket}/run/tokenize"
    assert run_stage(input_uri, out, "--set", "tokenizer.train.vocab_size=3000") == 0
    reader = ShardReader(out, cache_dir=tmp_path / "cache")
    manifest = reader.manifest
    assert manifest["tokenizer"]["vocab_size"] == 3000 and manifest["tokenizer"]["eot_id"] == 3000 - 144
    assert len(reader) == manifest["splits"][TRAIN]["rows"] > 0
    from tokenizers import Tokenizer

    trained = Tokenizer.from_file(reader.tokenizer_path)
    assert trained.get_vocab_size() == 3000
    rows = reader.rows(np.arange(len(reader)))
    assert rows.max() < 3000, "separators and padding use the trained tokenizer's <|endoftext|>"
    padded = [i for i in range(len(reader)) if reader.n_tokens(i) < reader.seq_len]
    assert padded and all((reader[i][reader.n_tokens(i):] == 3000 - 144).all() for i in padded)
    row = reader[0]
    assert trained.decode(row[:reader.n_tokens(0)].tolist()).startswith(("# language: ", "// language: "))
    assert storage.exists(f"{out}/stats.json") and storage.exists(f"{out}/_manifest.json")
