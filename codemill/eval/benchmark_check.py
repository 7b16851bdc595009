"""`codemill eval --check-benchmark`: the benchmark's own health, on this machine's toolchains.

Every canonical solution must pass, except the ones SPEC §8 documents (listed below and, with their reasons,
in data/humaneval-x/README.md). Several wrong answers per task (codemill.eval.mutants: the canonical solution
with one change, and a constant return) must fail: a task whose test passes one of them accepts a wrong
answer, and is listed with the answers that survived (`weak_tests`, also in summary.json and report.html of
every scored run). The check also measures each canonical solution's run time, from which the time limits of
later evaluations are calibrated.

The result is kept with a fingerprint of the toolchains, the data and the code that builds and runs the
programs, in the stage's output and in ~/.cache/codemill/eval/; a later evaluation on the machine refuses to
score unless the check passed on the current fingerprint (a flag overrides that, loudly). Each node that
executes samples computes the same fingerprint and refuses to run under another (ToolchainMismatch).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from codemill.eval import languages as L
from codemill.eval.mutants import DEFAULT_MUTANTS, mutants
from codemill.eval.toolchain import cache_root
from codemill.humaneval import Problem

# SPEC §8: canonical solutions that do not pass in the reference environment, and why.
KNOWN_FAILING = {
    "JavaScript/112": "the canonical solution returns `(z, false)`, JavaScript's comma operator, i.e. the bare "
                      "boolean, instead of the pair `[t, isPalindrome]` the test compares with",
    "JavaScript/155": "the canonical solution counts no digit for 0 (its `while (num > 0)` loop never runs), "
                      "but the test expects evenOddCount(0) to be [1, 0]",
}
FLAKY = {
    "Go/95": "the canonical solution stops after the second key of the map (`else { break }`); Go iterates "
             "maps in random order, so a mixed-case map passes or fails by chance",
}
CANONICAL = "canonical"
# The code a check result depends on (with the harness programs): a change to any of it needs a new check.
CODE_FILES = ("languages.py", "execute.py", "sandbox.py", "cgroups.py", "proof.py", "toolchain.py",
              "benchmark_check.py", "mutants.py", "harness/codec.py", "harness/python_test.py",
              "harness/python_candidate.py", "harness/cm_harness.cpp", "harness/CmHarness.java",
              "harness/cm_harness_test.go", "harness/prologue.js")


class ToolchainMismatch(RuntimeError):
    """A node that executes samples has other toolchains (or data, or code) than the run was checked with."""


class ToolchainTooOld(RuntimeError):
    """A toolchain is older than what the benchmark's canonical solutions need."""


def check_jobs(problems: dict[str, Problem], mutants_per_task: int = DEFAULT_MUTANTS) -> list[dict]:
    """The executions of the check: the canonical solution of every problem and its wrong answers (no
    post-processing: the canonical solution runs exactly as published)."""
    jobs = []
    for tid, p in problems.items():
        jobs.append({"task_id": tid, "kind": CANONICAL, "completion": p.canonical_solution})
        for m in mutants(p, L.adapter(p.language), mutants_per_task):
            jobs.append({"task_id": tid, "kind": f"{m.kind}:{m.change}", "completion": m.completion})
    return jobs


def code_hash(files: tuple[str, ...] = CODE_FILES) -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0" + (here / name).read_bytes())
    return h.hexdigest()


def fingerprint_of(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def fingerprint(versions: dict[str, str], dataset: str, sandbox: dict) -> str:
    """What a check result is valid for: toolchain versions, the data, the sandbox and the code."""
    return fingerprint_of({"versions": versions, "dataset": dataset, "sandbox": sandbox, "code": code_hash()})


def evaluate(rows: list[dict], fp: str, tasks: list[str], known_failing: dict[str, str] | None = None) -> dict:
    """The check's verdict from its executions (rows with task_id, kind, outcome, passed, seconds): a row of
    kind `canonical` per task and any number of wrong answers (every other kind). `known_failing`: units whose
    canonical answer is known not to pass, and why (default: HumanEval-X's, SPEC §8)."""
    known_failing = KNOWN_FAILING if known_failing is None else known_failing
    by = {(r["task_id"], r["kind"]): r for r in rows}
    wrong_by: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] != CANONICAL:
            wrong_by.setdefault(r["task_id"], []).append(r)
    unexpected, known, flaky, weak, surprising = [], [], [], [], []
    calibration: dict[str, float] = {}
    for tid in tasks:
        canon, wrong = by.get((tid, CANONICAL)), wrong_by.get(tid, [])
        if canon is None or not wrong:
            unexpected.append({"task_id": tid, "outcome": "missing"})
            continue
        if canon["passed"]:
            calibration[tid] = round(float(canon["seconds"]), 4)
        if tid in FLAKY:
            flaky.append({"task_id": tid, "outcome": canon["outcome"], "reason": FLAKY[tid]})
        elif tid in known_failing:
            entry = {"task_id": tid, "outcome": canon["outcome"], "reason": known_failing[tid]}
            (known if not canon["passed"] else surprising).append(entry)
        elif not canon["passed"]:
            unexpected.append({"task_id": tid, "outcome": canon["outcome"], "stderr": canon.get("stderr", "")[-500:]})
        survived = [{"kind": r["kind"], "completion": r.get("completion", "")} for r in wrong if r["passed"]]
        if survived:
            weak.append({"task_id": tid, "wrong_answers_tried": len(wrong), "accepted": survived})
    n_pass = sum(1 for tid in tasks if by.get((tid, CANONICAL), {}).get("passed"))
    return {
        "fingerprint": fp, "ok": not unexpected, "checked_at": time.time(), "tasks": len(tasks),
        "checked_tasks": sorted(tasks),
        "canonical_passed": n_pass, "unexpected_failures": unexpected, "known_failures": known,
        "known_failures_that_passed": surprising, "flaky": flaky,
        "wrong_answers_tried": sum(len(wrong_by.get(t, [])) for t in tasks),
        "weak_tests": weak, "calibration_seconds": calibration,
    }


def weak_tests_of(check: dict | None, tasks: list[str]) -> list[dict]:
    """The weak tests among `tasks` that a stored check found (what summary.json and the report show)."""
    wanted = set(tasks)
    return [w for w in (check or {}).get("weak_tests", []) if w["task_id"] in wanted]


def cache_file(fp: str) -> Path:
    return cache_root() / "eval" / f"benchmark-check-{fp}.json"


ROW_FIELDS = ("task_id", "kind", "outcome", "passed", "seconds", "completion", "stderr", "assertions")


def merge_and_save(rows: list[dict], fp: str, tasks: list[str], extra: dict,
                   known_failing: dict[str, str] | None = None) -> dict:
    """Store this check in the machine's cache, merged with an earlier check of the same fingerprint (a check
    of some tasks does not forget the others); returns the stored verdict over all checked tasks."""
    previous = load(fp) or {}
    by = {(r["task_id"], r["kind"]): r for r in previous.get("rows", [])}
    by.update({(r["task_id"], r["kind"]): {k: r.get(k) for k in ROW_FIELDS} for r in rows})
    all_tasks = sorted(set(tasks) | set(previous.get("checked_tasks", [])))
    merged = evaluate(list(by.values()), fp, all_tasks, known_failing)
    merged.update(extra)
    merged["rows"] = list(by.values())
    save(merged)
    return merged


def save(result: dict) -> Path:
    path = cache_file(result["fingerprint"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def load(fp: str) -> dict | None:
    path = cache_file(fp)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def gate(fp: str, tasks: list[str]) -> tuple[bool, str, dict | None]:
    """(may score, why not, the cached check) for the given tasks on the current fingerprint."""
    result = load(fp)
    if result is None:
        return False, (f"the benchmark check has not been run on this machine's current toolchains and data "
                       f"(fingerprint {fp}); run `codemill eval --check-benchmark --out URI` first"), None
    if not result.get("ok"):
        bad = ", ".join(u["task_id"] for u in result.get("unexpected_failures", [])[:10])
        return False, f"the benchmark check on fingerprint {fp} failed (canonical solutions failing: {bad})", result
    missing = sorted(set(tasks) - set(result.get("checked_tasks", [])))
    if missing:
        return False, (f"the benchmark check on fingerprint {fp} did not cover {len(missing)} of these tasks "
                       f"(e.g. {', '.join(missing[:5])})"), result
    return True, "", result


def time_limits(tasks: list[str], calibration: dict[str, float], multiple: float, floor_s: float,
                default_s: float) -> dict[str, float]:
    """Per task: multiple x the canonical solution's measured run time, at least the floor; the default for
    tasks without a measurement."""
    return {tid: max(floor_s, multiple * calibration[tid]) if tid in calibration else default_s for tid in tasks}
