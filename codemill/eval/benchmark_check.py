"""`codemill eval --check-benchmark`: the benchmark's own health, on this machine's toolchains.

Every canonical solution must pass, except the ones SPEC §8 documents (listed below and, with their reasons,
in data/humaneval-x/README.md). A deliberately wrong solution (the function returns its type's empty value)
must fail: a task whose test passes it has a test that cannot fail, and is listed. The check also measures
each canonical solution's run time, from which the time limits of later evaluations are calibrated.

The result is kept with a fingerprint of the toolchains, the data and the code that builds and runs the
programs, in the stage's output and in ~/.cache/codemill/eval/; a later evaluation on the machine refuses to
score unless the check passed on the current fingerprint (a flag overrides that, loudly).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from codemill.eval import languages as L
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
KINDS = ("canonical", "wrong")
CODE_FILES = ("languages.py", "execute.py", "sandbox.py", "toolchain.py", "benchmark_check.py")


def check_jobs(problems: dict[str, Problem]) -> list[dict]:
    """The executions of the check: the canonical and the wrong solution of every problem (no post-processing:
    the canonical solution runs exactly as published)."""
    jobs = []
    for tid, p in problems.items():
        jobs.append({"task_id": tid, "kind": "canonical", "completion": p.canonical_solution})
        jobs.append({"task_id": tid, "kind": "wrong", "completion": L.adapter(p.language).wrong_completion(p)})
    return jobs


def code_hash() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in CODE_FILES:
        h.update(name.encode() + b"\0" + (here / name).read_bytes())
    return h.hexdigest()


def fingerprint(versions: dict[str, str], dataset: str, sandbox: dict) -> str:
    """What a check result is valid for: toolchain versions, the data, the sandbox and the code."""
    blob = json.dumps({"versions": versions, "dataset": dataset, "sandbox": sandbox, "code": code_hash()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate(rows: list[dict], fp: str, tasks: list[str]) -> dict:
    """The check's verdict from its executions (rows with task_id, kind, outcome, passed, seconds)."""
    by = {(r["task_id"], r["kind"]): r for r in rows}
    unexpected, known, flaky, weak, surprising = [], [], [], [], []
    calibration: dict[str, float] = {}
    for tid in tasks:
        canon, wrong = by.get((tid, "canonical")), by.get((tid, "wrong"))
        if canon is None or wrong is None:
            unexpected.append({"task_id": tid, "outcome": "missing"})
            continue
        if canon["passed"]:
            calibration[tid] = round(float(canon["seconds"]), 4)
        if tid in FLAKY:
            flaky.append({"task_id": tid, "outcome": canon["outcome"], "reason": FLAKY[tid]})
        elif tid in KNOWN_FAILING:
            entry = {"task_id": tid, "outcome": canon["outcome"], "reason": KNOWN_FAILING[tid]}
            (known if not canon["passed"] else surprising).append(entry)
        elif not canon["passed"]:
            unexpected.append({"task_id": tid, "outcome": canon["outcome"], "stderr": canon.get("stderr", "")[-500:]})
        if wrong["passed"]:
            weak.append({"task_id": tid, "wrong_completion": wrong.get("completion", "")})
    n_pass = sum(1 for tid in tasks if by.get((tid, "canonical"), {}).get("passed"))
    return {
        "fingerprint": fp, "ok": not unexpected, "checked_at": time.time(), "tasks": len(tasks),
        "checked_tasks": sorted(tasks),
        "canonical_passed": n_pass, "unexpected_failures": unexpected, "known_failures": known,
        "known_failures_that_passed": surprising, "flaky": flaky,
        "tests_that_cannot_fail": weak, "calibration_seconds": calibration,
    }


def cache_file(fp: str) -> Path:
    return cache_root() / "eval" / f"benchmark-check-{fp}.json"


ROW_FIELDS = ("task_id", "kind", "outcome", "passed", "seconds", "completion", "stderr")


def merge_and_save(rows: list[dict], fp: str, tasks: list[str], extra: dict) -> dict:
    """Store this check in the machine's cache, merged with an earlier check of the same fingerprint (a check
    of some tasks does not forget the others); returns the stored verdict over all checked tasks."""
    previous = load(fp) or {}
    by = {(r["task_id"], r["kind"]): r for r in previous.get("rows", [])}
    by.update({(r["task_id"], r["kind"]): {k: r.get(k) for k in ROW_FIELDS} for r in rows})
    all_tasks = sorted(set(tasks) | set(previous.get("checked_tasks", [])))
    merged = evaluate(list(by.values()), fp, all_tasks)
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
