"""The DAG runner on a real local head: stages submitted as Ray jobs and resumed, their logs printed (Ray Data's
progress condensed), token authentication kept on. (`ray job submit` itself: tests/stages/test_ray_job_submit_cli.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import code_corpus

from codemill import manifest as mf
from codemill import storage
from codemill.dag import run_dag


def make_corpus(root: Path) -> Path:
    """Two tiny 'repositories' of code as folders, each with a file too small and a binary one."""
    return code_corpus.make_corpus(root, ("alpha", "beta"), rejected_files=True)


def write_dag(path: Path, corpus: Path, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""
        name: t
        stages:
          - name: crawl
            stage: crawl
            config:
              source: {{type: local, paths: ["{corpus}"], expand_children: true}}
          - name: filter
            stage: filter
            input: crawl
        """) + extra)
    return path


def test_dag_runs_stages_as_jobs_and_resumes(tmp_path, ray_head, capsys):
    corpus = make_corpus(tmp_path / "corpus")
    dag = write_dag(tmp_path / "d.yaml", corpus)
    out = str(tmp_path / "run")
    ran = run_dag(str(dag), out, address=ray_head.dashboard_url)
    assert ran == ["crawl", "filter"]
    # The filter's Ray Data progress, condensed: one line per operator per interval, not Ray's blocks.
    printed = capsys.readouterr().out
    assert re.search(r"^\[filter\] Ray Data \S+: MapBatches\(filter_and_write\) \d+/\d+", printed, re.M), printed[-3000:]
    assert "logging_progress.py" not in printed and "Total Progress" not in printed
    for stage in ("crawl", "filter"):
        assert mf.read_manifest(storage.join(out, stage)).status == "complete"
    kept = storage.read_table(storage.join(out, "filter", "kept"))
    assert sorted(kept.column("repo").to_pylist()) == ["local/alpha", "local/beta"]
    # A finished run has nothing left to do; a stopped one would resume at its first incomplete stage.
    assert run_dag(str(dag), out, address=ray_head.dashboard_url) == []
    storage.delete_file(mf.manifest_uri(storage.join(out, "filter")))
    assert run_dag(str(dag), out, address=ray_head.dashboard_url) == ["filter"]
    from ray.job_submission import JobSubmissionClient
    jobs = JobSubmissionClient(ray_head.dashboard_url).list_jobs()
    stages = [j.metadata.get("codemill_stage") for j in jobs
              if j.metadata.get("codemill_dag") == "t" and out in (j.entrypoint or "")]
    assert sorted(stages) == ["crawl", "filter", "filter"]


def test_token_auth_stays_on(tmp_path, ray_head):
    """Without the cluster's token, the job API refuses the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.update({"HOME": str(tmp_path), "RAY_AUTH_MODE": "token"})  # no ~/.ray/auth_token there
    proc = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "list", "--address", ray_head.dashboard_url],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "token" in (proc.stdout + proc.stderr).lower()
