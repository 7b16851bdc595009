"""Crawl reruns that are always right: outputs kept only when made under the current settings, max_repos
and selection changes taking effect, stale parts removed, failures retried by a plain rerun, tasks with a
time limit, and counts that add up (issue 10 items 4-5, issue 11 items 2-4)."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
from pathlib import Path

import pyarrow as pa

from codemill import manifest as mf
from codemill import storage
from codemill.config import build_config
from codemill.crawl import stage as crawl
from codemill.crawl.config import CrawlConfig
from codemill.crawl.keys import repo_key
from codemill.crawl.outputs import complete_file_parts, part_keys
from codemill.crawl.stats import check_counts
from codemill.runner import run_stage

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


def stats_of(out: str) -> dict:
    stats = storage.read_json(storage.join(out, "stats.json"))
    assert check_counts(stats) == [], stats
    return stats


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- on Ray -----------------------------------------------------------------------------------------

def test_rerun_with_max_repos_leaves_exactly_that_many(tmp_path, ray_session):
    """issue 11's reproduction: a rerun with max_repos=5 kept every repository of the first run."""
    corpus = make_repos(tmp_path / "corpus", 12)
    out = str(tmp_path / "out")
    assert run_stage("crawl", crawl_config(corpus), out, crawl.body).counts["repos_selected"] == 12
    m = run_stage("crawl", crawl_config(corpus, max_repos=5), out, crawl.body)
    assert (m.counts["repos_listed"], m.counts["repos_resumed"], m.counts["repos_selected"]) == (5, 5, 5)
    assert m.counts["repos_fetched_this_run"] == 0 and m.counts["stopped_at_max_repos"] is True
    five = {repo_key(f"local/pkg{i:03d}") for i in range(5)}
    assert part_keys(out, "repos") == five and part_keys(out, "files") == five
    assert part_keys(out, "skipped") == five  # node_modules/ records, of these five only
    assert len(complete_file_parts(out)) == 5
    assert storage.read_table(storage.join(out, "files")).num_rows == 10
    assert stats_of(out)["repos_selected"] == 5


def test_changed_settings_redo_repositories_and_leave_no_stale_files(tmp_path, ray_session):
    corpus = make_repos(tmp_path / "corpus", 3)
    out = str(tmp_path / "out")
    run_stage("crawl", crawl_config(corpus), out, crawl.body)
    assert len(complete_file_parts(out)) == 3
    # Every repository now rejected after its fetch (its main language is Python): no files/ part survives.
    m = run_stage("crawl", crawl_config(corpus, selection={"main_languages": ["C"]}), out, crawl.body)
    assert (m.counts["repos_resumed"], m.counts["repos_rejected_after_fetch"], m.counts["files"]) == (0, 3, 0)
    assert part_keys(out, "files") == set() and complete_file_parts(out) == []
    assert stats_of(out)["repos_rejected_by_reason"] == {"main_language": 3}
    # Other extraction settings: main.py (2,040 bytes) is now over the file cap; outputs follow.
    m = run_stage("crawl", crawl_config(corpus, extract={"max_file_bytes": 1500}), out, crawl.body)
    assert (m.counts["repos_resumed"], m.counts["repos_selected"], m.counts["files"]) == (0, 3, 3)
    files = pa.concat_tables(storage.read_table(p) for p in complete_file_parts(out))
    assert set(files.column("path").to_pylist()) == {"src/util.c"}
    # The same settings again: everything kept, nothing fetched.
    m = run_stage("crawl", crawl_config(corpus, extract={"max_file_bytes": 1500}), out, crawl.body, force=True)
    assert (m.counts["repos_resumed"], m.counts["repos_fetched_this_run"]) == (3, 0)


def test_a_failed_repository_is_retried_by_a_plain_rerun(tmp_path, ray_session):
    """A tar cut at a header boundary used to give the files before the cut and a completion marker."""
    corpus = make_repos(tmp_path / "corpus", 2)
    whole = tar_bytes({"broken/a.py": BODY.encode(), "broken/b.py": BODY.encode()})
    archive = tmp_path / "broken.tar"
    first = 512 + len(BODY) + -len(BODY) % 512
    archive.write_bytes(whole[:first])  # cut at a header boundary: the first member whole, no end-of-archive
    paths = [corpus / "pkg000", corpus / "pkg001", archive]
    out = str(tmp_path / "out")
    m = run_stage("crawl", crawl_config(paths), out, crawl.body)
    assert m.status == mf.STATUS_COMPLETE_WITH_FAILURES
    assert (m.counts["repos_failed"], m.counts["repos_selected"]) == (1, 2)
    stats = stats_of(out)
    assert stats["failed_repos"] == ["local/broken"] and stats["repos_failed_by_reason"] == {"archive_error": 1}
    key = repo_key("local/broken")
    assert key not in part_keys(out, "repos") and key not in part_keys(out, "files")
    [record] = storage.read_table(storage.join(out, "skipped", f"{key}.parquet")).to_pylist()
    assert record["reason"].startswith("archive_error")
    archive.write_bytes(whole)
    m = run_stage("crawl", crawl_config(paths), out, crawl.body)  # no --force: the failures make it rerun
    assert m.status == mf.STATUS_COMPLETE and m.counts["repos_failed"] == 0
    assert (m.counts["repos_resumed"], m.counts["repos_fetched_this_run"], m.counts["repos_selected"]) == (2, 1, 3)
    assert key not in part_keys(out, "skipped")  # the old error record is gone
    assert stats_of(out)["failed_repos"] == []


def test_a_task_past_its_time_limit_is_cancelled_and_recorded(tmp_path, ray_session):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:  # a git server that accepts and never answers, and a clone allowed far longer than the task
        url = f"http://127.0.0.1:{server.getsockname()[1]}/o/hang.git"
        cfg = build_config(CrawlConfig, {"source": {"type": "git", "urls": [url], "clone_timeout_s": 600},
                                         "task_timeout_s": 3, "task_num_cpus": 0.5})
        out = str(tmp_path / "out")
        m = run_stage("crawl", cfg, out, crawl.body)
    finally:
        for conn, _ in accepted:
            conn.close()
        server.close()
    assert m.counts["repos_failed"] == 1 and m.timings["fetch_s"] < 60
    assert stats_of(out)["repos_failed_by_reason"] == {"timeout": 1}


def test_a_deep_or_unmeasurable_repository_fails_alone(tmp_path, ray_session, monkeypatch):
    """A local repository 1,100 folders deep killed the whole crawl (RecursionError while listing); one
    that cannot be listed is recorded as failed, and the crawl goes on."""
    from test_local_git_sources import deep_tree

    from codemill.crawl.sources import local

    corpus = make_repos(tmp_path / "corpus", 2)
    real = local.size_kb_on_disk

    def measure(path: str) -> int:
        if path.endswith("pkg001"):
            raise OSError(5, "Input/output error", path)
        return real(path)

    monkeypatch.setattr(local, "size_kb_on_disk", measure)  # listing runs on the driver: this process
    with deep_tree(corpus / "zdeep", 1100):
        out = str(tmp_path / "out")
        m = run_stage("crawl", crawl_config(corpus), out, crawl.body)
    assert (m.counts["repos_listed"], m.counts["repos_selected"], m.counts["repos_failed"]) == (3, 2, 1)
    stats = stats_of(out)
    assert stats["failed_repos"] == ["local/pkg001"] and stats["repos_failed_by_reason"] == {"list": 1}
    deep_files = [p for p in complete_file_parts(out) if repo_key("local/zdeep") in p]
    assert storage.read_table(deep_files[0]).column("path").to_pylist() == ["d/" * 1100 + "leaf.py"]


def test_tasks_ask_ray_for_their_memory(tmp_path, ray_session):
    """A task asks for `task_memory_mb`: one asking for more than any node has is never run, and ends
    as its repository's timeout instead of exhausting a node."""
    corpus = make_repos(tmp_path / "corpus", 1)
    out = str(tmp_path / "out")
    m = run_stage("crawl", crawl_config(corpus, task_memory_mb=1 << 20, task_timeout_s=3), out, crawl.body)
    assert (m.counts["repos_failed"], m.counts["repos_selected"]) == (1, 0)
    assert stats_of(out)["repos_failed_by_reason"] == {"timeout": 1}


def test_the_filter_reads_only_repositories_with_a_valid_marker(tmp_path, ray_session):
    """The filter read every files/ part, stale ones included (a repository whose redo failed, a part
    written by a killed run)."""
    from codemill.filter import stage as filter_stage
    from codemill.filter.config import FilterConfig

    corpus = make_repos(tmp_path / "corpus", 2)
    out = str(tmp_path / "crawl")
    run_stage("crawl", crawl_config(corpus), out, crawl.body)
    [first, _] = complete_file_parts(out)
    stale = storage.join(out, "files", "0" * 20 + ".parquet")  # a part without a marker
    storage.write_bytes(stale, storage.read_bytes(first))
    m = run_stage("filter", FilterConfig(), str(tmp_path / "filter"), filter_stage.body, inputs={"input": out})
    assert m.counts["input_files"] == 4  # two repositories of two files, the stale copy not among them


# --- plan and counts, without Ray -------------------------------------------------------------------


def test_check_counts_finds_what_does_not_add_up():
    good = {"repos_listed": 6, "repos_refused_by_selection": 2, "repos_selected": 2, "repos_rejected_after_fetch": 1,
            "repos_failed": 1, "repos_resumed": 1, "repos_fetched_this_run": 2, "files": 9,
            "repos_refused_by_reason": {"excluded": 1, "stars<1": 1}, "repos_rejected_by_reason": {"size>1KB": 1},
            "repos_failed_by_reason": {"fetch": 1}, "failed_repos": ["o/f"],
            "repos_by_main_language": {"Python": 2}}
    assert check_counts(good) == []
    assert check_counts({**good, "repos_listed": 7}) == [
        "repos_listed 7 != refused + selected + rejected + failed 6"]
    assert check_counts({**good, "repos_failed_by_reason": {"fetch": 1, "timeout": 1}}) == [
        "repos_failed_by_reason sums to 2, not repos_failed 1"]
    assert check_counts({**good, "repos_resumed": 2}) == [
        "repos_resumed + repos_fetched_this_run = 4, not selected + rejected 3"]
    assert check_counts({**good, "files": True}) == ["files is True, not a count"]
