"""DAGs as graphs on a real Ray head: parallel stages, retries, run state, one run per output, and a runner
killed mid-run (SIGTERM and SIGKILL) that leaves no orphan and resumes where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from code_corpus import make_corpus

from codemill import manifest as mf
from codemill import storage
from codemill.dag import run_dag, status
from codemill.dag.run import head_file
from codemill.dag.state import read_state
from codemill.lease import LeaseHeld
from codemill.raycluster import session_processes

REPO = Path(__file__).resolve().parents[2]


def diamond(path: Path, corpus: Path, dedup_extra: str = "", crawl_extra: str = "") -> Path:
    """crawl -> filter -> (dedup_a, dedup_b): the two dedups are independent."""
    path.write_text(textwrap.dedent(f"""
        name: diamond
        stages:
          - name: crawl
            stage: crawl
            config:
              source: {{type: local, paths: ["{corpus}"], expand_children: true}}
              {crawl_extra}
          - name: filter
            stage: filter
            input: crawl
          - name: dedup_a
            stage: dedup
            inputs: {{input: filter}}
            {dedup_extra}
          - name: dedup_b
            stage: dedup
            inputs: {{input: filter}}
            config: {{near: {{threshold: 0.8}}}}
        """))
    return path


def test_independent_stages_run_in_parallel_and_state_is_recorded(tmp_path, ray_head):
    dag = diamond(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 3))
    out = str(tmp_path / "run")
    ran = run_dag(str(dag), out, address=ray_head.dashboard_url)
    assert ran[:2] == ["crawl", "filter"] and sorted(ran[2:]) == ["dedup_a", "dedup_b"]
    state = read_state(out)
    assert state["status"] == "succeeded" and state["dashboard"] == ray_head.dashboard_url
    a, b = state["stages"]["dedup_a"], state["stages"]["dedup_b"]
    assert a["job_id"] and b["job_id"] and a["job_id"] != b["job_id"]
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two dedup stages did not overlap"
    assert state["stages"]["filter"]["end"] <= min(a["start"], b["start"])
    table = status(out)
    assert "dedup_a" in table and "succeeded" in table and "docs_in=" in table
    # Rerun: nothing to do, the state says why.
    assert run_dag(str(dag), out, address=ray_head.dashboard_url) == []
    assert all(s["status"] == "skipped" for s in read_state(out)["stages"].values())


def test_a_stage_that_fails_twice_then_succeeds_under_retries(tmp_path, ray_head):
    problems = tmp_path / "problems.jsonl"  # missing at first: the dedup job fails until it exists
    extra = (f"retries: 2\n            retry_backoff_s: 3\n"
             f"            config: {{decontaminate: {{paths: ['{problems}']}}}}")
    dag = diamond(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 2), dedup_extra=extra)
    out = str(tmp_path / "run")
    run_dag(str(dag), out, address=ray_head.dashboard_url, until="filter")

    def create_after_second_failure():
        deadline = time.time() + 600
        while time.time() < deadline:
            state = read_state(out) or {}
            stage = state.get("stages", {}).get("dedup_a", {})
            if stage.get("attempt") == 2 and stage.get("status") == "failed":
                problems.write_text(json.dumps({"task_id": "X/0", "prompt": "def f():", "canonical_solution": ""})
                                    + "\n")
                return
            time.sleep(0.2)

    helper = threading.Thread(target=create_after_second_failure, daemon=True)
    helper.start()
    assert run_dag(str(dag), out, address=ray_head.dashboard_url, only=["dedup_a"]) == ["dedup_a"]
    helper.join(timeout=5)
    assert read_state(out)["stages"]["dedup_a"]["attempt"] == 3
    assert mf.read_manifest(storage.join(out, "dedup_a")).status == "complete"


def test_two_runs_of_one_output_one_is_refused(tmp_path, ray_head):
    dag = diamond(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 150), crawl_extra="max_in_flight: 1")
    out = str(tmp_path / "run")
    errors: list[BaseException] = []

    def run():
        try:
            run_dag(str(dag), out, address=ray_head.dashboard_url, until="crawl")
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert len(errors) == 1 and isinstance(errors[0], LeaseHeld), errors
    assert "is being written by" in str(errors[0]) and "dag run of d.yaml" in str(errors[0])
    assert mf.read_manifest(storage.join(out, "crawl")).status == "complete"


# After the runner ends, however it ends: its head's watchdog gives Ray 2 s to stop, then kills what is left.
HEAD_GONE_WITHIN_S = 5.0


def _commands(pids: list[int]) -> list[str]:
    return [(Path("/proc") / str(p) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
            for p in pids if (Path("/proc") / str(p)).exists()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_runner_leaves_no_orphan_and_the_rerun_resumes(tmp_path, how):
    """The runner starts its own head (no --address), is killed during the crawl, and is run again."""
    dag = diamond(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 40), crawl_extra="max_in_flight: 1")
    out = str(tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "token")
    cmd = [sys.executable, "-m", "codemill.cli", "dag", "run", str(dag), "--out", out, "--until", "filter",
           "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        state = read_state(out) or {}
        crawl = state.get("stages", {}).get("crawl", {})
        if crawl.get("status") == "running" and crawl.get("job_id") and storage.exists(head_file(out)):
            break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    head = storage.read_json(head_file(out))
    assert session_processes(head["head_pid"], head["root"]), "the head's processes should be running"
    time.sleep(2)
    proc.send_signal(how)
    proc.communicate(timeout=120)
    # Every process of the head (raylet, GCS, dashboard, agents, workers) ends within seconds of the runner.
    runner_ended = time.monotonic()
    while (left := session_processes(head["head_pid"], head["root"])) and time.monotonic() < runner_ended + 60:
        time.sleep(0.1)
    gone_after = time.monotonic() - runner_ended
    assert not left, f"processes of the killed run's head are left after 60 s: {_commands(left)}"
    assert gone_after <= HEAD_GONE_WITHIN_S, f"the head's processes took {gone_after:.1f} s to end"
    assert mf.read_manifest(storage.join(out, "crawl")) is None

    # The rerun may fetch several repositories at a time (max_in_flight is not part of what the crawl's
    # completion markers are made under, so the repositories the killed run finished are still skipped).
    rerun = subprocess.run([*cmd, "--set", "crawl:max_in_flight=8"], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "ran crawl, filter" in rerun.stdout
    assert mf.read_manifest(storage.join(out, "filter")).status == "complete"
    assert not storage.exists(head_file(out))


def test_keep_head_leaves_the_dashboard_up_until_stop_head(tmp_path):
    dag = diamond(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus", 2))
    out = str(tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "token")
    run = subprocess.run([sys.executable, "-m", "codemill.cli", "dag", "run", str(dag), "--out", out, "--only", "crawl",
                          "--num-cpus", "1", "--keep-head"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    head = storage.read_json(head_file(out))
    try:
        assert "The local Ray head stays up: dashboard http://127.0.0.1:" in run.stdout
        assert f"codemill dag stop-head {out}" in run.stdout and str(tmp_path / "token") in run.stdout
        assert _alive(head["head_pid"])
        request = urllib.request.Request(f"{head['dashboard_url']}/api/jobs/", headers={
            "Authorization": f"Bearer {(tmp_path / 'token').read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            jobs = json.loads(resp.read())
        assert any("codemill.crawl" in (j.get("entrypoint") or "") for j in jobs), "the finished run's job is listed"
    finally:
        stop = subprocess.run([sys.executable, "-m", "codemill.cli", "dag", "stop-head", out], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
    deadline = time.time() + 30
    while _alive(head["head_pid"]) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(head["head_pid"]) and not storage.exists(head_file(out))
