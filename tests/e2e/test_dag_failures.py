"""Failures inside whole DAG runs: a failing or interrupted stage, SIGTERM stopping the running job, the DAG
flags that steer a rerun, and the job API refusing a request without the token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from code_corpus import make_corpus

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError
from codemill.dag import run_dag

REPO = Path(__file__).resolve().parents[2]


# -- on Ray -----------------------------------------------------------------------------------------------


def write_dag(path: Path, corpus: Path, crawl_extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""
        name: t
        stages:
          - name: crawl
            stage: crawl
            config:
              source: {{type: local, paths: ["{corpus}"], expand_children: true}}
              {crawl_extra}
          - name: filter
            stage: filter
            input: crawl
          - name: dedup
            stage: dedup
            input: filter
        """))
    return path


def test_dag_flags_only_force_and_set(tmp_path, ray_head):
    dag = write_dag(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 3))
    out = str(tmp_path / "run")
    url = ray_head.dashboard_url
    assert run_dag(str(dag), out, address=url, only=["crawl"]) == ["crawl"]
    assert run_dag(str(dag), out, address=url) == ["filter", "dedup"]
    assert run_dag(str(dag), out, address=url, force=["filter"]) == ["filter", "dedup"]
    assert run_dag(str(dag), out, address=url, overrides={"dedup": ["near.threshold=0.8"]}) == ["dedup"]
    assert mf.read_manifest(storage.join(out, "dedup")).config["near"]["threshold"] == 0.8
    with pytest.raises(ConfigError, match=r"--only \['nope'\]: not stages of"):
        run_dag(str(dag), out, address=url, only=["nope"])
    with pytest.raises(ConfigError, match=r"--set \['nope'\]: not stages of"):
        run_dag(str(dag), out, address=url, overrides={"nope": ["x=1"]})


def test_a_failed_stage_stops_the_dag_and_a_rerun_resumes_there(tmp_path, ray_head):
    from codemill.dag import StageFailed

    dag = write_dag(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 2))
    out = str(tmp_path / "run")
    assert run_dag(str(dag), out, address=ray_head.dashboard_url, only=["crawl"]) == ["crawl"]
    # Damage the crawl's output under its manifest: the filter job fails reading it.
    part = storage.list_files(storage.join(out, "crawl", "files"), ".parquet")[0]
    original = storage.read_bytes(part)
    storage.write_bytes(part, b"not parquet")
    with pytest.raises(StageFailed, match="stage filter ended FAILED"):
        run_dag(str(dag), out, address=ray_head.dashboard_url)
    assert mf.read_manifest(storage.join(out, "filter")) is None
    assert mf.read_manifest(storage.join(out, "dedup")) is None
    storage.write_bytes(part, original)  # repaired: the rerun starts at the stage that failed
    assert run_dag(str(dag), out, address=ray_head.dashboard_url) == ["filter", "dedup"]


def test_sigterm_stops_the_running_job(tmp_path, ray_head):
    from ray.job_submission import JobSubmissionClient

    # Many small repositories, one task at a time: the crawl runs long enough to be interrupted.
    dag = write_dag(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 400), "max_in_flight: 1")
    out = str(tmp_path / "run")
    env = {**os.environ, **ray_head.env()}
    proc = subprocess.Popen([sys.executable, "-m", "codemill.cli", "dag", "run", str(dag), "--out", out,
                             "--address", ray_head.dashboard_url], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = JobSubmissionClient(ray_head.dashboard_url)
    deadline = time.time() + 240
    job = None
    while time.time() < deadline and job is None:
        running = [j for j in client.list_jobs() if j.metadata.get("codemill_dag") == "t"
                   and j.entrypoint and out in j.entrypoint and j.status.value == "RUNNING"]
        job = running[0] if running else None
        time.sleep(0.5)
    assert job is not None, "the crawl job never started"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output[-2000:]
    deadline = time.time() + 60
    while client.get_job_status(job.submission_id).value not in ("STOPPED", "FAILED", "SUCCEEDED"):
        assert time.time() < deadline
        time.sleep(0.5)
    assert client.get_job_status(job.submission_id).value == "STOPPED", output[-2000:]
    assert mf.read_manifest(storage.join(out, "crawl")) is None


def test_the_job_api_answers_401_without_the_token(ray_head):
    with pytest.raises(urllib.error.HTTPError, match="401") as err:
        urllib.request.urlopen(f"{ray_head.dashboard_url}/api/jobs/", timeout=30)
    assert err.value.code == 401
    request = urllib.request.Request(f"{ray_head.dashboard_url}/api/jobs/",
                                     headers={"Authorization": f"Bearer {ray_head.token_path.read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
