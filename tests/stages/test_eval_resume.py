"""A run survives: results are written as batches finish, so a rerun after the driver was killed executes only
what is missing and gives the same results; a batch whose task is lost twice (its worker killed twice) marks
its samples infrastructure_error, counted and not scored, and the stage completes with failures that a plain
rerun retries; a node whose toolchains differ from the driver's is refused. On the shared Ray head, the stage
run as `python -m codemill.eval` in a process of its own (so it can be killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.humaneval import load_problems
from codemill.runner import stage_main

REPO = Path(__file__).resolve().parents[2]
TASKS = [f"Python/{n}" for n in range(8)]
# Sleeps at the first call only (the test calls the candidate once per assertion).
SLOW = "    import time\n    if not globals().get('slept'):\n        globals()['slept'] = time.sleep({s}) or True\n"


@pytest.fixture(scope="module")
def problems():
    return load_problems(["Python"])


@pytest.fixture(scope="module")
def checked(ray_head, eval_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "out"
    assert stage_main("eval", ["--check-benchmark", "--out", str(out), "--set", f"tasks={json.dumps(TASKS)}",
                               "--set", "check.mutants_per_task=0"]) == 0
    return out


def samples_file(path: Path, problems, slow_s: float) -> Path:
    """Per task: its canonical solution after a short sleep (passes) and the constant return (fails)."""
    lines = []
    for tid in TASKS:
        p = problems[tid]
        lines.append({"task_id": tid, "sample_id": "good", "completion": SLOW.format(s=slow_s) + p.canonical_solution})
        lines.append({"task_id": tid, "sample_id": "bad", "completion": L.adapter("Python").wrong_completion(p)})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def start(args: list[str], ray_head) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_head.address}
    return subprocess.Popen([sys.executable, "-m", "codemill.eval", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def partial_rows(out: Path) -> int:
    folder = out / "partial" / "score"
    return sum(len(p.read_text().splitlines()) for p in folder.glob("rows-*.jsonl")) if folder.is_dir() else 0


def wait_for(condition, what: str, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout_s:.0f} s for {what}")


def outcomes(out: Path) -> dict:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return {(r["task_id"], r["sample_id"]): (r["outcome"], r["passed"]) for r in rows}


COMMON = ["--set", "execution.batch_size=1", "--set", "execution.time_floor_s=30", "--set", "metrics.k=[1]",
          "--set", "metrics.budget_k=[1]", "--set", "metrics.bootstrap_resamples=20", "--set", "charts=false"]


def test_a_killed_driver_resumes_where_it_stopped(checked, problems, ray_head, tmp_path):
    samples = samples_file(tmp_path / "s.jsonl", problems, slow_s=1.5)
    out = tmp_path / "out"
    args = ["--samples", str(samples), "--out", str(out), *COMMON]
    driver = start(args, ray_head)
    try:
        wait_for(lambda: partial_rows(out) >= 4, "the first batches' results to be written", 240)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and anything it started itself
        driver.wait()
    written = partial_rows(out)
    assert not (out / "_manifest.json").exists() and not (out / "results.jsonl").exists()
    assert stage_main("eval", args) == 0  # the rerun
    manifest = json.loads((out / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["programs_reused"] >= written - 2  # rows of a batch cut short by the kill may be lost
    assert counts["programs_reused"] + counts["programs_executed"] == 2 * len(TASKS)
    assert counts["programs_executed"] < 2 * len(TASKS)
    assert not (out / "partial").exists()
    # The same results as a run that was never interrupted.
    clean = tmp_path / "clean"
    assert stage_main("eval", ["--samples", str(samples), "--out", str(clean), *COMMON]) == 0
    assert outcomes(out) == outcomes(clean)
    assert {v for k, v in outcomes(out).items() if k[1] == "good"} == {(L.PASSED, True)}


def _ancestors(pid: int) -> list[bytes]:
    """The command lines of a process's ancestors."""
    lines = []
    for _ in range(12):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    return lines


def batch_workers(ray_head) -> list[int]:
    """Workers of this test's Ray head executing an eval batch now (Ray titles them after the task); other
    clusters' on the machine are not touched."""
    mine = f":{ray_head.gcs_port}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::_run_batch") and any(b"raylet" in a and mine in a
                                                              for a in _ancestors(int(name))):
                found.append(int(name))
    return found


def worker_alone(ray_head, what: str, timeout_s: float) -> list[int]:
    """The one batch worker that has run alone for three looks a second apart (the fast sample's batch ends
    within a second or two; then the slow one's worker runs alone)."""
    seen: list[list[int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen.append(batch_workers(ray_head))
        if len(seen) >= 3 and len(seen[-1]) == 1 and seen[-1] == seen[-2] == seen[-3]:
            return seen[-1]
        time.sleep(1.0)
    raise AssertionError(f"waited {timeout_s:.0f} s for {what}")


def test_a_batch_lost_twice_is_an_infrastructure_error_and_a_rerun_retries_it(checked, problems, ray_head, tmp_path):
    p = problems["Python/0"]
    lines = [{"task_id": "Python/1", "completion": problems["Python/1"].canonical_solution},
             {"task_id": "Python/0", "sample_id": "slow", "completion": SLOW.format(s=12) + p.canonical_solution}]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    args = ["--samples", str(samples), "--out", str(out), *COMMON]
    driver = start(args, ray_head)
    try:
        for attempt in (1, 2):  # the first execution, then Ray's retry of the lost task
            victims = worker_alone(ray_head, f"the slow batch's worker, alone (attempt {attempt})", 240)
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda victims=victims: not any(Path(f"/proc/{v}/cmdline").exists() and
                                                     Path(f"/proc/{v}/cmdline").read_bytes() for v in victims),
                     "the killed workers to go", 30)
        assert driver.wait(timeout=240) == 0, driver.stderr.read().decode()[-2000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete_with_failures" and manifest["counts"]["infrastructure_errors"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["infrastructure_errors"] == 1
    assert summary["metrics"]["generation"]["languages"]["Python"]["samples"] == 1  # the lost one is not scored
    assert outcomes(out)[("Python/0", "slow")][0] == L.INFRASTRUCTURE_ERROR
    # A plain rerun executes only the lost sample, and completes.
    assert stage_main("eval", args) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["programs_executed"] == 1
    assert outcomes(out)[("Python/0", "slow")] == (L.PASSED, True)


def test_a_node_with_other_toolchains_is_refused(ray_session, problems):
    from codemill.eval.config import EvalConfig
    from codemill.eval.fanout import execute_on_ray
    from codemill.eval.humaneval_x import HumanEvalX

    bench = HumanEvalX()
    env = bench.environment(EvalConfig(), unsafe=False)
    p = problems["Python/0"]
    item = bench._item(p.task_id, None, "generation", False, p.canonical_solution, 10.0, env)
    driver_says = {**env.toolchains, "python": "Python 3.99.0"}  # what a driver with another interpreter sees
    context = {**bench.context(env, [item]), "toolchains": driver_says,
               "fingerprint": bc.fingerprint(driver_says, env.dataset_sha256, env.context["facts"])}
    with pytest.raises(bc.ToolchainMismatch, match=r"python: 'Python 3\.\d+\.\d+' here, 'Python 3\.99\.0' on the driver"):
        execute_on_ray([item], bench.worker, context, batch_size=1, cpus_per_task=1, batch_bound_s=lambda b: 60,
                       what="programs", on_rows=lambda rows: None)
