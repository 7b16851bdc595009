"""What happens when things go wrong: a body raising midway, corrupt manifests, an output inside its input,
empty inputs, a failing or interrupted stage inside a DAG, and the DAG flags that steer a rerun."""

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
from codemill.config import ConfigError, StrictModel
from codemill.dag import load_dag, plan, run_dag
from codemill.runner import InputError, run_stage, stage_main

REPO = Path(__file__).resolve().parents[1]


class Demo(StrictModel):
    size: int = 3


def test_a_body_raising_midway_leaves_no_manifest_and_a_rerun_redoes_it(tmp_path):
    out = str(tmp_path / "o")

    def broken(run):
        storage.write_bytes(run.path("part-1"), b"half of the work")
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run_stage("demo", Demo(), out, broken)
    assert mf.read_manifest(out) is None
    calls = []
    run_stage("demo", Demo(), out, lambda run: calls.append(1) or {"rows": 3})
    assert calls == [1] and mf.read_manifest(out).status == "complete"


def test_a_complete_output_made_stale_by_a_failed_rerun_is_redone(tmp_path):
    """A rerun that fails after clearing the old manifest must not leave the old one claiming completeness."""
    out = str(tmp_path / "o")
    run_stage("demo", Demo(), out, lambda run: {"rows": 3})
    with pytest.raises(RuntimeError, match="boom"):
        run_stage("demo", Demo(size=4), out, lambda run: (_ for _ in ()).throw(RuntimeError("boom")))
    assert mf.read_manifest(out) is None


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2]", b'{"stage": "x"}', b"\xff\xfe"])
def test_a_corrupt_manifest_reads_as_incomplete(tmp_path, content, caplog):
    out = str(tmp_path / "o")
    storage.write_bytes(mf.manifest_uri(out), content)
    assert mf.read_manifest(out) is None
    assert "treating the output as incomplete" in caplog.text
    with pytest.raises(mf.MissingInputError, match=r"is not a complete stage output \(its _manifest.json is"):
        mf.require_complete(out, "--input")
    calls = []
    run_stage("demo", Demo(), out, lambda run: calls.append(1) or {})  # no --force needed
    assert calls == [1] and mf.read_manifest(out).status == "complete"


def test_an_output_inside_its_input_is_refused_before_anything_is_deleted(tmp_path, capsys):
    up = str(tmp_path / "up")
    run_stage("up", Demo(), up, lambda run: {})
    for out in (up, str(tmp_path / "up" / "dedup"), str(tmp_path)):
        with pytest.raises(InputError, match="would delete its input"):
            run_stage("down", Demo(), out, lambda run: {}, inputs={"input": up})
        assert mf.read_manifest(up) is not None
    assert stage_main("dedup", ["--input", up, "--out", up + "/x"]) == 2
    assert "would delete its input" in capsys.readouterr().err


def test_credentials_in_a_dag_config_are_refused_and_not_shown(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - name: c\n    stage: crawl\n    config:\n      source:\n        type: git\n"
                 "        urls: ['https://user:s3cr@t/pw@example.com/o/r.git']\n")
    with pytest.raises(ConfigError, match="holds credentials") as err:
        plan(load_dag(p), p, str(tmp_path / "run"))
    assert "holds credentials" in str(err.value) and "s3cr" not in str(err.value)


def test_secret_variables_are_not_expanded_into_saved_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_dont_save_me")
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - {name: c, stage: crawl, config: {source: {type: local, "
                 "paths: ['/tmp/${GITHUB_TOKEN}']}}}\n")
    with pytest.raises(ConfigError, match=r"\$\{GITHUB_TOKEN\} looks like a secret"):
        load_dag(p)


def test_secret_env_in_a_dag_is_refused(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - {name: c, stage: crawl, env: {AWS_SECRET_ACCESS_KEY: x}, "
                 "config: {source: {type: local, paths: [/tmp]}}}\n")
    with pytest.raises(ConfigError, match="the Ray dashboard shows it"):
        load_dag(p)


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


@pytest.mark.ray
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


@pytest.mark.ray
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


@pytest.mark.ray
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


@pytest.mark.ray
@pytest.mark.parametrize("stage", ["dedup", "tokenize"])
def test_empty_input_gives_an_empty_complete_output(tmp_path, ray_session, stage):
    from codemill.filter.schema import KEPT_SCHEMA
    from codemill.stages import STAGES

    upstream = str(tmp_path / "up")
    storage.write_table(KEPT_SCHEMA.empty_table(), storage.join(upstream, "kept", "part-empty.parquet"))
    mf.write_manifest(upstream, mf.Manifest(stage="filter" if stage == "dedup" else "dedup",
                                            status=mf.STATUS_COMPLETE, config_hash="x", config={}))
    spec = STAGES[stage]
    config = spec.load_config_model()()
    manifest = run_stage(stage, config, str(tmp_path / "out"), spec.load_body(), {"input": upstream})
    assert manifest.status == "complete"
    if stage == "dedup":
        assert manifest.counts["docs_in"] == 0 and manifest.counts["docs_kept"] == 0
        kept = storage.read_table(str(tmp_path / "out" / "kept"), schema=KEPT_SCHEMA)
        assert kept.num_rows == 0
    else:
        assert manifest.counts["documents_in"] == 0 and manifest.counts["shards"] == 0


@pytest.mark.ray
def test_the_job_api_answers_401_without_the_token(ray_head):
    with pytest.raises(urllib.error.HTTPError, match="401") as err:
        urllib.request.urlopen(f"{ray_head.dashboard_url}/api/jobs/", timeout=30)
    assert err.value.code == 401
    request = urllib.request.Request(f"{ray_head.dashboard_url}/api/jobs/",
                                     headers={"Authorization": f"Bearer {ray_head.token_path.read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200



class WithUrl(StrictModel):
    url: str = ""
    depth: int = 1


def test_url_credentials_are_redacted_in_manifests_and_config_errors(tmp_path):
    from codemill.config import build_config

    secret_url = "https://user:pa@ss/w0rd@git.example.com/o/r.git"
    out = str(tmp_path / "o")
    run_stage("demo", WithUrl(url=secret_url), out, lambda run: {})
    text = storage.read_bytes(mf.manifest_uri(out)).decode()
    assert "pa@ss" not in text and "w0rd" not in text and "***@git.example.com" in text
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        build_config(WithUrl, {"url": [secret_url], "depth": 1})
    assert "w0rd" not in str(err.value) and "***@git.example.com" in str(err.value)
