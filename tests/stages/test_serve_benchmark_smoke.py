"""benchmarks/serve_latency.py --smoke: the engine, INT8 and 13b-memory parts of the GPU benchmark on a tiny
model on the CPU, so the script the lead runs on the GPU is known to run end to end (its HTTP part runs in the
e2e tier's Serve tests' code paths)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serve_benchmark_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_latency.py"), "--smoke", "--out-dir",
                           str(tmp_path), "--parts", "engine", "int8", "memory_13b"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["serve_13b.json", "serve_engine.json", "serve_http.json", "serve_summary.json"]
    engine = json.loads((tmp_path / "serve_engine.json").read_text())
    assert "errors" not in engine, engine.get("errors")
    assert engine["batch1"]["codemill"]["ms_per_token"] > 0
    assert engine["int8"]["min_logit_cosine"] >= 0.99
    memory = json.loads((tmp_path / "serve_13b.json").read_text())
    assert "errors" not in memory and memory["13b"]["ran"]["finished"] == memory["13b"]["ran"]["sequences"] > 0
    targets = json.loads((tmp_path / "serve_summary.json").read_text())["targets"]
    assert "int8_over_bf16_ms" in targets and "13b_concurrent_2k_sequences" in targets
