"""The DAG runner: validation before any work, and real runs as Ray jobs on a real local head."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import code_corpus
import pytest

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError
from codemill.dag import load_dag, plan, run_dag


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


def test_bad_stage_name_is_refused(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - {name: a, stage: crawll}\n")
    with pytest.raises(ConfigError, match="unknown stage 'crawll'"):
        load_dag(p)


def test_a_cycle_is_refused_and_named():
    from codemill.dag import DagStage, topological_order

    stages = [DagStage(name="a", stage="dedup", input="b"), DagStage(name="b", stage="dedup", input="a")]
    with pytest.raises(ValueError, match="a cycle: a -> b -> a"):
        topological_order(stages)


def test_stages_run_in_graph_order_whatever_the_file_order(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - {name: f, stage: filter, input: c}\n"
                 "  - {name: c, stage: crawl, config: {source: {type: local, paths: [/tmp]}}}\n")
    assert [ps.name for ps in plan(load_dag(p), p, str(tmp_path / "out"))] == ["c", "f"]


@pytest.mark.parametrize(("stages", "message"), [
    ("  - {name: f, stage: filter, input: nope}\n", "names 'nope', which is not a stage of this DAG"),
    ("  - {name: c, stage: crawl}\n  - {name: d, stage: dedup, input: c}\n",
     "input 'input' reads a filter stage's output, but 'c' is a crawl stage"),
    ("  - {name: c, stage: crawl}\n  - {name: f, stage: filter, inputs: {model: c}}\n",
     "unknown input 'model'; filter takes \\['input'\\]"),
    ("  - {name: f, stage: filter}\n", "needs input 'input'"),
])
def test_bad_wiring_is_refused_with_the_fix(tmp_path, stages, message):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n" + stages)
    with pytest.raises(ConfigError, match=message):
        load_dag(p)


def test_bad_stage_config_is_refused_before_any_work(tmp_path):
    dag = write_dag(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus"))
    with pytest.raises(ConfigError, match="max_repos"):
        plan(load_dag(dag), dag, str(tmp_path / "out"), {"crawl": ["max_repos=-3"]})
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
def test_dag_runs_stages_as_jobs_and_resumes(tmp_path, ray_head):
    corpus = make_corpus(tmp_path / "corpus")
    dag = write_dag(tmp_path / "d.yaml", corpus)
    out = str(tmp_path / "run")
    ran = run_dag(str(dag), out, address=ray_head.dashboard_url)
    assert ran == ["crawl", "filter"]
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


@pytest.mark.ray
def test_ray_job_submit_cli_runs_a_stage(tmp_path, ray_head):
    """What users type: `ray job submit -- python -m codemill.crawl ...` against a real head."""
    corpus = make_corpus(tmp_path / "corpus")
    cfg = tmp_path / "crawl.yaml"
    cfg.write_text(f"source: {{type: local, paths: ['{corpus}'], expand_children: true}}\n")
    out = tmp_path / "crawl-out"
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, **ray_head.env()}
    proc = subprocess.run([ray_bin, "job", "submit", "--address", ray_head.dashboard_url, "--",
                           "python", "-m", "codemill.crawl", "--config", str(cfg), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = storage.read_table(str(out / "files"))
    assert sorted(files.column("path").to_pylist()) == ["tiny.py", "tiny.py", "walk.py", "walk.py"]
    skipped = storage.read_table(str(out / "skipped"))
    assert set(skipped.column("reason").to_pylist()) >= {"binary"}
    assert mf.read_manifest(str(out)).counts["repos_selected"] == 2


@pytest.mark.ray
def test_token_auth_stays_on(tmp_path, ray_head):
    """Without the cluster's token, the job API refuses the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.update({"HOME": str(tmp_path), "RAY_AUTH_MODE": "token"})  # no ~/.ray/auth_token there
    proc = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "list", "--address", ray_head.dashboard_url],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "token" in (proc.stdout + proc.stderr).lower()
