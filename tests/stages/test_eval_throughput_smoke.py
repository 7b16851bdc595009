"""benchmarks/eval_throughput.py --smoke: five canonical solutions through the eval stage's executor on a fresh
local Ray, all passing (the full comparison with the old code is in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_eval_throughput_smoke(tmp_path):
    out = tmp_path / "eval_throughput.json"
    proc = subprocess.run([sys.executable, "benchmarks/eval_throughput.py", "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["executions"] == 5 and report["summary"]["new"]["failed"] == []
    assert report["runs"]["new"][0]["outcomes"] == {"passed": 5}
    assert "old" not in report["runs"] and report["machine"]["cores"] >= 1
