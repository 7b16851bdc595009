"""The crawl stage on a real local Ray: outputs, selection, resume after a kill, S3 output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc

from codemill import manifest as mf
from codemill import storage
from codemill.config import build_config
from codemill.crawl import stage as crawl
from codemill.crawl.config import CrawlConfig
from codemill.runner import run_stage

BODY = "def f(x):\n    return x * 2  # a line of ordinary code\n" * 40


def make_repos(root: Path, n: int) -> Path:
    for i in range(n):
        repo = root / f"pkg{i:03d}"
        (repo / "src").mkdir(parents=True)
        (repo / "src" / "main.py").write_text(BODY + f"# repo {i}\n")
        (repo / "src" / "util.c").write_text("int add(int a, int b) { return a + b; }\n" * 30)
        (repo / "node_modules" / "dep").mkdir(parents=True)
        (repo / "node_modules" / "dep" / "index.js").write_text("module.exports = 1;\n")
    return root


def crawl_config(corpus: Path, **extra) -> CrawlConfig:
    source = {"type": "local", "paths": [str(corpus)], "expand_children": True}
    return build_config(CrawlConfig, {"source": source, **extra})


def test_a_repository_of_empty_files_is_crawled_not_failed(tmp_path, ray_session):
    """It keeps files but no bytes: the crawl's metrics must not fail it (Ray's counters refuse a zero)."""
    (tmp_path / "corpus" / "emptypkg").mkdir(parents=True)
    (tmp_path / "corpus" / "emptypkg" / "__init__.py").write_text("")
    m = run_stage("crawl", crawl_config(tmp_path / "corpus"), str(tmp_path / "out"), crawl.body)
    assert m.status == mf.STATUS_COMPLETE and m.counts["repos_failed"] == 0 and m.counts["files"] == 1


def test_local_crawl_outputs(tmp_path, ray_session):
    corpus = make_repos(tmp_path / "corpus", 3)
    (corpus / "pkg001" / "big.py").write_text("x = 1\n" * 400_000)  # 2.4 MB: over the per-file cap
    out = str(tmp_path / "out")
    m = run_stage("crawl", crawl_config(corpus), out, crawl.body)
    files = storage.read_table(storage.join(out, "files"))
    assert files.num_rows == 6
    assert set(files.column("path").to_pylist()) == {"src/main.py", "src/util.c"}
    assert len(files.column("doc_id").unique()) == 6
    repos = storage.read_table(storage.join(out, "repos"))
    assert sorted(repos.column("full_name").to_pylist()) == ["local/pkg000", "local/pkg001", "local/pkg002"]
    assert set(repos.column("main_language").to_pylist()) == {"Python"}
    skipped = storage.read_table(storage.join(out, "skipped"))
    reasons = dict(zip(skipped.column("path").to_pylist(), skipped.column("reason").to_pylist()))
    assert any(r.startswith("file_size") or "size" in r for p, r in reasons.items() if p == "big.py"), reasons
    assert m.counts["repos_selected"] == 3 and m.counts["files"] == 6
    stats = storage.read_json(storage.join(out, "stats.json"))
    assert stats["repos_by_main_language"] == {"Python": 3}


def test_selection_and_exclusion(tmp_path, ray_session):
    corpus = make_repos(tmp_path / "corpus", 3)
    out = str(tmp_path / "out")
    cfg = crawl_config(corpus, selection={"exclude": ["LOCAL/pkg002"], "max_size_kb": 1000})
    run_stage("crawl", cfg, out, crawl.body)
    repos = storage.read_table(storage.join(out, "repos"))
    assert sorted(repos.column("full_name").to_pylist()) == ["local/pkg000", "local/pkg001"]
    refused = storage.read_table(storage.join(out, "skipped", "_selection.parquet"))
    assert refused.to_pylist() == [{"repo": "local/pkg002", "path": "", "reason": "excluded"}]
    # A size limit below every repository (the local source measures them before fetching).
    out2 = str(tmp_path / "out2")
    m = run_stage("crawl", crawl_config(corpus, selection={"max_size_kb": 1}), out2, crawl.body)
    refused = storage.read_table(storage.join(out2, "skipped", "_selection.parquet"))
    assert set(refused.column("reason").to_pylist()) == {"size>1KB"} and refused.num_rows == 3
    assert not storage.list_files(storage.join(out2, "files"), ".parquet")
    assert m.counts["repos_selected"] == 0 and m.counts["repos_refused_by_selection"] == 3


class HangingGitServer:
    """A loopback "git server" whose connections hang until `fail_fast()`; then it closes them at once."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/o/hangs.git"
        self.conns: list[socket.socket] = []
        self.hang = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.hang:
                self.conns.append(conn)
            else:
                conn.close()

    def fail_fast(self) -> None:
        self.hang = False
        for conn in self.conns:
            conn.close()

    def close(self) -> None:
        self.fail_fast()
        self.sock.close()


def make_git_repos(root: Path, n: int) -> list[Path]:
    template = root / "template"
    (template / "src").mkdir(parents=True)
    (template / "src" / "main.py").write_text(BODY)
    (template / "src" / "util.c").write_text("int add(int a, int b) { return a + b; }\n" * 30)
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=template, check=True)
    subprocess.run([*git, "add", "."], cwd=template, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=template, check=True)
    repos = [root / f"o{i:03d}" / "repo" for i in range(n)]
    for repo in repos:
        shutil.copytree(template, repo)
    return repos


def test_resume_after_kill_fetches_only_what_is_missing(tmp_path, ray_head):
    """The crawl is killed while it is certainly not done: one at a time, it hangs on the 10th repository
    (a server that never answers) once the 9 before it are done. The rerun fetches only what is missing."""
    repos = make_git_repos(tmp_path / "upstream", 29)
    server = HangingGitServer()
    try:
        urls = [r.as_uri() for r in repos[:9]] + [server.url] + [r.as_uri() for r in repos[9:]]
        out = tmp_path / "out"
        cfg = tmp_path / "crawl.yaml"
        cfg.write_text(json.dumps({"source": {"type": "git", "urls": urls}, "max_in_flight": 1}))
        cmd = [sys.executable, "-m", "codemill.crawl", "--config", str(cfg), "--out", str(out)]
        env = {**os.environ, **ray_head.env()}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.time() + 300
        while len(storage.list_files(str(out / "repos"), ".parquet")) < 9 or not server.conns:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(storage.list_files(str(out / "repos"), ".parquet")) == 9 and mf.read_manifest(str(out)) is None
        server.fail_fast()
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        server.close()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counts = mf.read_manifest(str(out)).counts
    assert (counts["repos_resumed"], counts["repos_fetched_this_run"], counts["repos_failed"]) == (9, 20, 1)
    files = storage.read_table(str(out / "files"))
    assert files.num_rows == 58 and len(files.column("doc_id").unique()) == 58


def test_crawl_writes_to_s3(tmp_path, ray_session, s3_bucket):
    corpus = make_repos(tmp_path / "corpus", 2)
    out = f"{s3_bucket}/runs/crawl"
    run_stage("crawl", crawl_config(corpus), out, crawl.body)
    assert mf.read_manifest(out).status == "complete"
    files = storage.read_table(storage.join(out, "files"))
    assert files.num_rows == 4
    assert pc.all(pc.greater(files.column("size_bytes"), 0)).as_py()
