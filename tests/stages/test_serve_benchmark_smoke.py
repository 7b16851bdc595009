"""benchmarks/serve_latency.py --smoke: every part of the GPU benchmark (engine vs its baseline, INT8, the 13b
memory part, Ray Serve over HTTP against the engine alone) on a tiny model on the CPU, on the shared Ray head, so
the script the lead runs once on the GPU is known to run end to end, and to write what each part measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serve_benchmark_smoke(tmp_path, ray_head):
    env = {**os.environ, **ray_head.env(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_latency.py"), "--smoke", "--out-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["serve_13b.json", "serve_engine.json", "serve_http.json", "serve_summary.json"]
    engine = json.loads((tmp_path / "serve_engine.json").read_text())
    assert "errors" not in engine, engine.get("errors")
    assert engine["batch1"]["codemill"]["ms_per_token"] > 0
    assert engine["int8"]["min_logit_cosine"] >= 0.99
    memory = json.loads((tmp_path / "serve_13b.json").read_text())
    assert "errors" not in memory and memory["13b"]["ran"]["finished"] == memory["13b"]["ran"]["sequences"] > 0
    http = json.loads((tmp_path / "serve_http.json").read_text())
    assert "errors" not in http, http.get("errors")
    assert [lv["concurrency"] for lv in http["levels"]] == [1, 4]
    for level in http["levels"]:
        assert level["errors"] == 0 and not level["cut_short"] and level["requests"] == level["planned_requests"]
        assert level["output_tokens"] == 8 * level["requests"] and level["tokens_per_s"] > 0
    assert http["ttft_concurrency1"]["http_ms_p50"] > 0 and http["ttft_concurrency1"]["engine_alone_ms_p50"] > 0
    targets = json.loads((tmp_path / "serve_summary.json").read_text())["targets"]
    assert {"int8_over_bf16_ms", "13b_concurrent_2k_sequences", "serve_added_ttft_ms"} <= set(targets)


def test_serve_benchmark_ends_within_its_budget(tmp_path):
    """--max-seconds bounds the run whatever runs then: past it, what was measured is written and the process
    exits (status 3)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_latency.py"), "--smoke", "--out-dir",
                           str(tmp_path), "--parts", "engine", "int8", "--max-seconds", "0.5"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stderr[-3000:]
    engine = json.loads((tmp_path / "serve_engine.json").read_text())
    assert engine["errors"]["watchdog"].startswith("--max-seconds 0.5 ran out during")
