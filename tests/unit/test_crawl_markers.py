"""Crawl completion markers without a cluster: only parts with a valid marker made under the current
settings are read, markers are read in groups, and failure reasons carry no credentials."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from codemill import storage
from codemill.config import build_config
from codemill.crawl.config import CrawlConfig
from codemill.crawl.keys import repo_key
from codemill.crawl.outputs import complete_file_parts, part_uri
from codemill.crawl.plan import plan_crawl
from codemill.crawl.sources.base import RepoRef

BODY = "def f(x):\n    return x * 2  # a line of ordinary code\n" * 40   # 2,040 bytes
C_BODY = "int add(int a, int b) { return a + b; }\n" * 30                  # 1,230 bytes


def make_repos(root: Path, n: int) -> Path:
    for i in range(n):
        repo = root / f"pkg{i:03d}"
        (repo / "src").mkdir(parents=True)
        (repo / "src" / "main.py").write_text(BODY + f"# repo {i}\n")
        (repo / "src" / "util.c").write_text(C_BODY)
        (repo / "node_modules" / "dep").mkdir(parents=True)
        (repo / "node_modules" / "dep" / "index.js").write_text("module.exports = 1;\n")
    return root


def crawl_config(paths: list[Path] | Path, **extra) -> CrawlConfig:
    paths = [paths] if isinstance(paths, Path) else paths
    source = {"type": "local", "paths": [str(p) for p in paths], "expand_children": len(paths) == 1}
    return build_config(CrawlConfig, {"source": source, **extra})


# --- on Ray -----------------------------------------------------------------------------------------


def test_failure_reasons_are_stored_without_credentials(tmp_path):
    from codemill.crawl.repo import record_failure

    out = str(tmp_path / "out")
    result = record_failure(out, "o/r", "fetch: fatal: unable to access 'https://u:p@ss/w@host/o/r.git/'")
    stored = storage.read_table(storage.join(out, "skipped")).to_pylist()
    assert result.reason == stored[0]["reason"] == "fetch: fatal: unable to access 'https://***@host/o/r.git/'"


# --- plan and counts, without Ray -------------------------------------------------------------------

def test_plan_keeps_only_markers_made_under_the_current_settings(tmp_path):
    cfg = crawl_config(make_repos(tmp_path / "corpus", 1), max_repos=3, selection={"exclude": ["o/x"]})
    refs = [RepoRef(f"o/{n}", "local", f"/r/{n}", stars=s) for n, s in
            (("a", 1), ("x", 5), ("b", 0), ("c", 2), ("A", 3), ("d", 1), ("e", 1))]
    plan = plan_crawl(refs, cfg, frozenset({"o/x"}), {})
    hashes = dict((r.full_name, h) for r, h in plan.todo)
    markers = {repo_key("o/a"): {"config_hash": hashes["o/a"]}, repo_key("o/c"): {"config_hash": "other"}}
    plan = plan_crawl(refs, cfg, frozenset({"o/x"}), markers)
    assert plan.resumed == {repo_key("o/a"): "o/a"}
    assert [r.full_name for r, _ in plan.todo] == ["o/c", "o/d"]
    assert plan.refused == [("o/x", "", "excluded"), ("o/b", "", "stars<1"), ("o/A", "", "duplicate_name")]
    assert plan.listed == 6 and plan.stopped_at_max_repos  # o/e is past max_repos: not listed
    assert plan.orphan_keys({repo_key(n) for n in ("o/a", "o/b", "o/e", "o/zz")}) == {
        repo_key(n) for n in ("o/b", "o/e", "o/zz")}


def test_complete_file_parts_skips_parts_without_a_valid_marker(tmp_path):
    out = str(tmp_path / "crawl")
    row = {"full_name": ["o/a"], "selected": [True], "config_hash": ["h"]}
    for key, marker in (("k1", row), ("k2", {**row, "selected": [False]}), ("k3", {**row, "config_hash": [None]}),
                        ("k4", None)):
        storage.write_table(pa.table({"x": [1]}), storage.join(out, "files", f"{key}.parquet"))
        if marker is not None:
            storage.write_table(pa.table(marker), storage.join(out, "repos", f"{key}.parquet"))
    storage.write_bytes(storage.join(out, "repos", "k5.parquet"), b"not parquet")
    storage.write_table(pa.table({"x": [1]}), storage.join(out, "files", "k5.parquet"))
    assert complete_file_parts(out) == [storage.join(out, "files", "k1.parquet")]


def test_markers_read_together_skip_unreadable_and_old_ones(tmp_path):
    from codemill.crawl.outputs import MARKER_READERS, read_markers

    out = str(tmp_path)
    keys = [f"k{i:04d}" for i in range(3 * MARKER_READERS)]  # more markers than readers at once
    for i, key in enumerate(keys):
        storage.write_table(pa.table({"full_name": [f"r/{i}"], "selected": [i % 2 == 0], "config_hash": ["h"]}),
                            part_uri(out, "repos", key))
    storage.write_table(pa.table({"full_name": ["r/old"], "selected": [True]}), part_uri(out, "repos", "old"))
    (tmp_path / "repos" / "torn.parquet").write_bytes(b"PAR1 not a whole file")
    markers = read_markers(out)
    assert sorted(markers) == keys  # the marker of an older format and the torn one: not done
    assert all(markers[k]["full_name"] == f"r/{i}" for i, k in enumerate(keys))
    assert len(complete_file_parts(out)) == 0  # markers, but no files/ parts
