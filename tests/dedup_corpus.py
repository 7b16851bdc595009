"""A filter-stage output for dedup tests: this repository's own source files with exact copies, near copies,
a benchmark solution, empty and null rows, and what dedup must make of each."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from codemill import manifest as mf
from codemill import storage
from codemill.crawl.schema import make_doc_id
from codemill.filter.schema import KEPT_SCHEMA
from codemill.humaneval import read_problems

REPO_ROOT = Path(__file__).resolve().parents[1]
HUMANEVAL_FILES = sorted(str(p) for p in (REPO_ROOT / "data" / "humaneval-x").glob("*/humaneval_*.jsonl.gz"))


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


def write_filter_output(out: str):
    rows, expect = _corpus()
    table = pa.Table.from_pylist(rows, schema=KEPT_SCHEMA).append_column(
        "utf8_bytes", pa.array([r["size_bytes"] for r in rows], pa.int64()))  # a measurement column rides along
    half = table.num_rows // 2
    storage.write_table(table.slice(0, half), storage.join(out, "kept", "part-00000.parquet"))
    storage.write_table(table.slice(half), storage.join(out, "kept", "part-00001.parquet"))
    mf.write_manifest(out, mf.Manifest(stage="filter", status=mf.STATUS_COMPLETE, config_hash="t", config={}))
    return out, table, expect
