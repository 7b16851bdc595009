"""Failures of one stage run without a cluster: a body raising midway, corrupt manifests, an output inside
its input, credentials and secret variables kept out of DAG configs and manifests."""

from __future__ import annotations

import pytest

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError, StrictModel
from codemill.dag import load_dag, plan
from codemill.runner import InputError, run_stage, stage_main


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
