"""The benchmark check in CI: all 820 canonical solutions of HumanEval-X, sandboxed, as Ray tasks, with their
expected outcomes, and a deliberately wrong solution per task that every test but the known weak one rejects."""

from __future__ import annotations

import json
import os

from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.eval.stage import main

# CPP/23's test calls strlen("x") with string literals, which C's strlen(const char*) matches better than
# the solution's strlen(string): the test never calls the solution, so it cannot fail.
WEAK_TESTS = {"CPP/23"}


def test_all_820_canonical_solutions(ray_head, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "check"
    assert main(["--check-benchmark", "--out", str(out)]) == 0
    check = json.loads((out / "check.json").read_text())
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert check["tasks"] == 820 and len(rows) == 1640
    canonical = {r["task_id"]: r for r in rows if r["kind"] == "canonical"}
    wrong = {r["task_id"]: r for r in rows if r["kind"] == "wrong"}
    failing = {t: r["outcome"] for t, r in canonical.items() if not r["passed"]}
    unexpected = {t: canonical[t]["stderr"][-300:] for t in failing if t not in bc.KNOWN_FAILING and t not in bc.FLAKY}
    assert unexpected == {}
    assert {t: failing.get(t) for t in bc.KNOWN_FAILING} == {t: L.WRONG_ANSWER for t in bc.KNOWN_FAILING}
    assert check["ok"] and check["canonical_passed"] >= 820 - len(bc.KNOWN_FAILING) - len(bc.FLAKY)
    assert {w["task_id"] for w in check["tests_that_cannot_fail"]} == WEAK_TESTS
    assert {t for t, r in wrong.items() if r["passed"]} == WEAK_TESTS
    assert len(check["calibration_seconds"]) == check["canonical_passed"]
    # Stored for the machine: a later evaluation of any of these tasks is allowed on this fingerprint.
    ok, why, _ = bc.gate(check["fingerprint"], sorted(canonical))
    assert ok, why
    assert os.path.exists(bc.cache_file(check["fingerprint"]))
