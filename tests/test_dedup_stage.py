"""End-to-end test of the dedup stage on the shared local Ray cluster: a small corpus made of this
repository's own source files, with exact copies, near copies, a benchmark solution and bad rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codemill import manifest as mf
from codemill import storage
from codemill.crawl.schema import make_doc_id
from codemill.filter.schema import KEPT_SCHEMA
from codemill.humaneval import read_problems
from codemill.runner import stage_main

REPO_ROOT = Path(__file__).resolve().parents[1]
HUMANEVAL_FILES = sorted(str(p) for p in (REPO_ROOT / "data" / "humaneval-x").glob("*/humaneval_*.jsonl.gz"))

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _row(repo: str, path: str, content: str | None, stars: int) -> dict:
    sha = hashlib.sha256((content or "").encode()).hexdigest()
    return {"doc_id": make_doc_id(repo, path, sha), "repo": repo, "path": path, "ext": Path(path).suffix,
            "content": content, "size_bytes": len((content or "").encode()), "sha256": sha, "encoding": "utf-8",
            "repo_stars": stars, "repo_language": "Python", "language": "Python"}


def _corpus() -> tuple[list[dict], dict]:
    sources = [p for p in sorted((REPO_ROOT / "codemill").rglob("*.py")) if p.stat().st_size > 1500][:24]
    rows, expect = [], {"exact": {}, "near": {}}
    for i, p in enumerate(sources):
        text = p.read_text()
        original = _row("org/original", f"src/{p.name}", text, stars=10)
        rows.append(original)
        if i % 3 == 0:  # an exact copy (CRLF, trailing spaces) in a more starred repo: the copy survives
            copy = _row("fork/popular", f"lib/{p.name}", text.replace("\n", "  \r\n"), stars=500)
            rows.append(copy)
            expect["exact"][original["doc_id"]] = copy["doc_id"]
        elif i % 3 == 1:  # a near copy (one edited line) deeper in a less starred repo: the original survives
            lines = text.splitlines()
            lines[len(lines) // 2] += "  # edited"
            near = _row("someone/vendored", f"third_party/pkg/{p.name}", "\n".join(lines), stars=1)
            rows.append(near)
            expect["near"][near["doc_id"]] = original["doc_id"]
    rows.append(_row("x/empty", "a/__init__.py", "", 0))
    rows.append(_row("x/empty", "__init__.py", "", 0))  # shallower path: survives
    expect["exact"][rows[-2]["doc_id"]] = rows[-1]["doc_id"]
    rows.append(_row("x/null", "n.py", None, 0))
    assert len(HUMANEVAL_FILES) == 5, "the shipped HumanEval-X data is missing"
    solution = dict(read_problems(HUMANEVAL_FILES, ["prompt", "canonical_solution"]))["Python/31"]
    leaked = _row("x/leak", "solutions.py", "import math\n\n" + solution + "\n\nprint(is_prime(7))\n", 3)
    # An exact copy of the leaked file: contaminated and a duplicate, removed (and counted) once.
    copy = _row("x/leak-copy", "solutions.py", leaked["content"], 1)
    rows += [leaked, copy]
    expect["contamination"] = {leaked["doc_id"]: "Python/31", copy["doc_id"]: "Python/31"}
    return rows, expect


@pytest.fixture()
def filter_output(tmp_path):
    return _write_filter_output(str(tmp_path / "filter"))


def _write_filter_output(out: str):
    rows, expect = _corpus()
    table = pa.Table.from_pylist(rows, schema=KEPT_SCHEMA).append_column(
        "utf8_bytes", pa.array([r["size_bytes"] for r in rows], pa.int64()))  # a measurement column rides along
    half = table.num_rows // 2
    storage.write_table(table.slice(0, half), storage.join(out, "kept", "part-00000.parquet"))
    storage.write_table(table.slice(half), storage.join(out, "kept", "part-00001.parquet"))
    mf.write_manifest(out, mf.Manifest(stage="filter", status=mf.STATUS_COMPLETE, config_hash="t", config={}))
    return out, table, expect


def test_dedup_stage_end_to_end(ray_session, filter_output, tmp_path):
    inp, table, expect = filter_output
    out = tmp_path / "dedup"
    argv = ["--input", str(inp), "--out", str(out), "--set", "docs_per_batch=7", "--set", "band_rows_per_partition=1000",
            "--set", f"decontaminate.paths={json.dumps(HUMANEVAL_FILES)}"]
    assert stage_main("dedup", argv) == 0

    dups = pq.read_table(str(out / "duplicates")).to_pylist()
    by_id = {d["doc_id"]: d for d in dups}
    for removed, keeper in expect["exact"].items():
        assert by_id[removed]["kind"] == "exact" and by_id[removed]["kept_doc_id"] == keeper
        assert by_id[removed]["similarity"] == 1.0
    for removed, keeper in expect["near"].items():
        assert by_id[removed]["kind"] == "near" and by_id[removed]["kept_doc_id"] == keeper
        assert 0.7 <= by_id[removed]["similarity"] <= 1.0  # estimated: a one-line edit may not show
    assert len(by_id) == len(dups), "a document is listed twice in duplicates/"
    for removed, task in expect["contamination"].items():
        assert by_id[removed]["kind"] == "contamination" and by_id[removed]["benchmark_task_id"] == task
    n_expected = sum(len(v) for v in expect.values())
    unexpected = [d for d in dups if not any(d["doc_id"] in v for v in expect.values())]
    assert not unexpected and len(dups) == n_expected

    kept = pq.read_table(str(out / "kept"))
    assert set(kept.column_names) == set(table.column_names)  # every input column, measurements included
    assert kept.num_rows == table.num_rows - n_expected
    assert not set(kept["doc_id"].to_pylist()) & set(by_id)
    assert None in kept["content"].to_pylist()  # the null-content row is kept, not lost

    stats = json.loads((out / "stats.json").read_text())
    assert stats["docs"] == table.num_rows and stats["kept"] == kept.num_rows
    assert stats["not_deduplicated"]["count"] == 1
    assert stats["removed_by_kind"]["exact"] == len(expect["exact"])
    assert stats["removed_by_kind"]["near"] == len(expect["near"])
    assert stats["removed_by_kind"]["contamination"] == 2
    python = stats["per_language"]["Python"]
    assert python["duplicate_rate"] == pytest.approx(n_expected / table.num_rows)
    assert (stats["lsh"]["bands"], stats["lsh"]["rows"]) == (25, 10) and stats["lsh"]["band_partitions"] >= 2

    manifest = mf.read_manifest(str(out))
    assert manifest.status == mf.STATUS_COMPLETE and manifest.counts["docs_kept"] == kept.num_rows
    assert stage_main("dedup", argv) == 0  # complete for this config and input: nothing to do
    assert mf.read_manifest(str(out)).timings == manifest.timings


def test_dedup_stage_on_s3(ray_session, s3_bucket):
    inp, table, expect = _write_filter_output(f"{s3_bucket}/run/filter")
    out = f"{s3_bucket}/run/dedup"
    assert stage_main("dedup", ["--input", inp, "--out", out, "--set", "docs_per_batch=7"]) == 0
    dups = storage.read_table(storage.join(out, "duplicates"))
    # No decontamination configured here: the leaked file's copy (fewer stars) is just an exact duplicate.
    leak_copy = {r["doc_id"] for r in table.to_pylist() if r["repo"] == "x/leak-copy"}
    removed = set(expect["exact"]) | set(expect["near"]) | leak_copy
    assert set(dups.column("doc_id").to_pylist()) == removed
    kept = storage.read_table(storage.join(out, "kept"))
    assert kept.num_rows == table.num_rows - len(removed)
    assert storage.read_json(storage.join(out, "stats.json"))["kept"] == kept.num_rows
    assert mf.read_manifest(out).status == mf.STATUS_COMPLETE
