"""Every script in benchmarks/ runs in its `--smoke` mode (tiny inputs, CPU) against the shared Ray head, so a
script that no longer matches the code fails here, not the day someone needs its figure (benchmarks/train_mfu.py
had imported a function the stage contract removed). A script without a --smoke mode fails too, except the
few other engineers own, which join once they have one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))
from bench_env import SHARED_HEAD_ENV  # noqa: E402

# Imported by the scripts, not run on their own.
LIBRARIES = {"bench_env.py", "machine.py", "cuda_timing.py"}
# Owned by other engineers: run here once they have a --smoke mode; only their exit status is checked.
OWNED_ELSEWHERE = {"eval_throughput.py", "serve_latency.py", "decode_step_variants.py", "proof_run.py"}
# Smoke-run by a test of their own (not run twice): script -> that test, under tests/stages/.
OWN_SMOKE_TEST = {"eval_throughput.py": "test_eval_throughput_smoke.py",
                  "serve_latency.py": "test_serve_benchmark_smoke.py"}
# Where each script writes its results (a file, or a folder for the ones that write several).
OUT_FLAG = {"train_mfu.py": "--results", "serve_latency.py": "--out-dir", "codegen_staged.py": "--out",
            "proof_run.py": "--out"}
FOLDER_OUT = {"serve_latency.py", "codegen_staged.py", "proof_run.py"}


def smoke_scripts() -> list[str]:
    found = []
    for path in sorted(BENCH.glob("*.py")):
        if path.name in LIBRARIES or path.name in OWN_SMOKE_TEST:
            continue
        if path.name in OWNED_ELSEWHERE and '"--smoke"' not in path.read_text():
            continue
        found.append(path.name)
    return found


def test_scripts_smoked_elsewhere_still_are():
    for script, test in OWN_SMOKE_TEST.items():
        text = (Path(__file__).parent / test).read_text()
        assert f"benchmarks/{script}" in text and "--smoke" in text, f"{test} no longer runs {script} --smoke"


@pytest.mark.parametrize("script", smoke_scripts())
def test_benchmark_runs_in_its_smoke_mode(script, ray_head, tmp_path):
    assert '"--smoke"' in (BENCH / script).read_text(), (
        f"benchmarks/{script} has no --smoke mode: add one (tiny inputs, CPU, seconds) so this test runs it")
    head = tmp_path / "head.json"
    head.write_text(json.dumps(ray_head.record()))
    out = tmp_path / ("out" if script in FOLDER_OUT else "result.json")
    env = {**os.environ, **ray_head.env(), SHARED_HEAD_ENV: str(head), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--smoke", OUT_FLAG.get(script, "--out"), str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"benchmarks/{script} --smoke failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    if script in OWNED_ELSEWHERE:
        return
    if script in FOLDER_OUT:
        assert out.is_dir() and any(out.iterdir()), f"benchmarks/{script} --smoke wrote nothing to {out}"
    elif script == "train_mfu.py":  # JSON lines, one result per contender
        results = [json.loads(line) for line in out.read_text().splitlines()]
        assert {r["trainer"].split(" ")[0] for r in results} == {"codemill", "plain"} and all(r["smoke"] for r in results)
    else:
        result = json.loads(out.read_text())
        assert result.get("smoke") is True, f"benchmarks/{script} --smoke: its results do not say smoke"
