"""The benchmark check in CI, on a stratified subset of HumanEval-X (`codemill eval --check-benchmark` keeps
the full 820): three tasks of every language, every task whose canonical solution is known to fail or be
flaky, every task whose test accepts the constant return, and the first two tasks per language whose tests the
full check found accepting a mutant (data/humaneval-x/weak_tests.json lists all 311; tests that draw random
inputs are left out of this sample, their mutants' fate varies). Sandboxed, as Ray tasks, with the outcomes the
full check had."""

from __future__ import annotations

import json
import os

from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.humaneval import DATA_DIR, load_problems, task_id_for
from codemill.runner import stage_main

PER_LANGUAGE = (0, 1, 2)
WEAK_PER_LANGUAGE = 2


def stratified_tasks() -> list[str]:
    weak = json.loads((DATA_DIR / "weak_tests.json").read_text())["weak_tests"]
    problems = load_problems()
    tasks = [task_id_for(lang, n) for lang in L.LANGUAGES for n in PER_LANGUAGE]
    tasks += sorted(bc.KNOWN_FAILING) + sorted(bc.FLAKY)
    tasks += [w["task_id"] for w in weak if any(a["kind"].startswith("constant_return") for a in w["accepted"])]
    steady = [w["task_id"] for w in weak if "rand" not in problems[w["task_id"]].test]
    for lang in L.LANGUAGES:
        mine = sorted((t for t in steady if problems[t].language == lang), key=lambda t: problems[t].number)
        tasks += mine[:WEAK_PER_LANGUAGE]
    return list(dict.fromkeys(tasks))


def test_benchmark_check_on_a_stratified_subset(ray_head, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tasks = stratified_tasks()
    out = tmp_path / "check"
    assert stage_main("eval", ["--check-benchmark", "--out", str(out), "--set", f"tasks={json.dumps(tasks)}"]) == 0
    check = json.loads((out / "check.json").read_text())
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert check["tasks"] == len(tasks) and check["checked_tasks"] == sorted(tasks)
    canonical = {r["task_id"]: r for r in rows if r["kind"] == bc.CANONICAL}
    failing = {t: r["outcome"] for t, r in canonical.items() if not r["passed"]}
    unexpected = {t: canonical[t]["stderr"][-300:] for t in failing if t not in bc.KNOWN_FAILING and t not in bc.FLAKY}
    assert unexpected == {}
    assert {t: failing.get(t) for t in bc.KNOWN_FAILING} == {t: L.WRONG_ANSWER for t in bc.KNOWN_FAILING}
    assert check["ok"]
    # Every task the full check found weak is weak here too, with the same wrong answers accepted; no other is
    # (a flaky task's mutants are as flaky as it is).
    problems = load_problems()
    expected = {w["task_id"]: sorted(a["kind"] for a in w["accepted"])
                for w in json.loads((DATA_DIR / "weak_tests.json").read_text())["weak_tests"]}
    found = {w["task_id"]: sorted(a["kind"] for a in w["accepted"]) for w in check["weak_tests"]}
    steady = {t for t in tasks if t not in bc.FLAKY and "rand" not in problems[t].test}
    assert {t: k for t, k in found.items() if t in steady} == {t: k for t, k in expected.items() if t in steady}
    assert len(check["calibration_seconds"]) == check["canonical_passed"]
    ok, why, _ = bc.gate(check["fingerprint"], tasks)
    assert ok, why
    assert os.path.exists(bc.cache_file(check["fingerprint"]))
