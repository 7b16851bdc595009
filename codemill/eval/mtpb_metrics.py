"""MTPB's metrics from per-(sample, test case) results (SPEC §10): the pass rate (passed pairs / all pairs) per
problem and averaged over problems with a bootstrap 95% interval, per category, pass@k over the samples of each
test case where n allows, the outcome distribution, and multi-turn against single-turn side by side."""

from __future__ import annotations

from collections import Counter, defaultdict

from codemill.eval import passk
from codemill.eval.languages import OUTCOMES
from codemill.eval.mtpb import MODES, MtpbProblem


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mode_metrics(rows: list[dict], problems: dict[str, MtpbProblem], ks: list[int], resamples: int,
                 seed: int) -> dict:
    """Metrics of one mode's rows (task_id, test_index, passed, outcome)."""
    pairs: Counter = Counter()
    passed: Counter = Counter()
    cases: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        pairs[r["task_id"]] += 1
        passed[r["task_id"]] += bool(r["passed"])
        case = cases[(r["task_id"], r["test_index"])]
        case[0] += 1
        case[1] += bool(r["passed"])
    per_problem = {tid: {"name": problems[tid].name, "category": problems[tid].category, "pairs": pairs[tid],
                         "passed": passed[tid], "pass_rate": passed[tid] / pairs[tid]}
                   for tid in sorted(pairs, key=lambda t: int(t.rsplit("/", 1)[1]))}
    rates = [p["pass_rate"] for p in per_problem.values()]
    by_category: dict[str, list[float]] = defaultdict(list)
    for p in per_problem.values():
        by_category[p["category"]].append(p["pass_rate"])
    return {
        "problems": len(per_problem), "test_cases": len(cases), "pairs": sum(pairs.values()),
        "samples_per_test_case": {"min": min(n for n, _ in cases.values()), "max": max(n for n, _ in cases.values())},
        "pass_rate": {"value": _mean(rates), "ci95": passk.bootstrap_ci(rates, resamples=resamples, seed=seed)},
        "categories": {c: {"problems": len(v), "pass_rate": _mean(v)} for c, v in sorted(by_category.items())},
        "pass_at_k": {str(k): _pass_at_k(cases, k, resamples, seed) for k in ks},
        "outcomes": {o: sum(1 for r in rows if r["outcome"] == o) for o in OUTCOMES},
        "per_problem": per_problem,
    }


def _pass_at_k(cases: dict[tuple[str, int], list[int]], k: int, resamples: int, seed: int) -> dict:
    """pass@k of each test case over its samples, averaged per problem, then over problems; undefined (None)
    when a test case has fewer than k samples, with how many."""
    undefined = sum(1 for n, _ in cases.values() if n < k)
    if undefined:
        return {"value": None, "ci95": None, "undefined_test_cases": undefined, "why": f"n < {k}"}
    per_problem: dict[str, list[float]] = defaultdict(list)
    for (tid, _), (n, c) in cases.items():
        per_problem[tid].append(passk.pass_at_k(n, c, k))
    values = [sum(v) / len(v) for v in per_problem.values()]
    return {"value": _mean(values), "ci95": passk.bootstrap_ci(values, resamples=resamples, seed=seed),
            "undefined_test_cases": 0}


def compute_mtpb_metrics(rows: list[dict], problems: dict[str, MtpbProblem], ks: list[int], resamples: int = 1000,
                         seed: int = 0) -> dict:
    modes = {m: mode_metrics([r for r in rows if r["mode"] == m], problems, ks, resamples, seed)
             for m in MODES if any(r["mode"] == m for r in rows)}
    out: dict = {"modes": modes}
    if len(modes) > 1:
        categories = sorted({c for m in modes.values() for c in m["categories"]})
        out["comparison"] = {
            "pass_rate": {m: v["pass_rate"]["value"] for m, v in modes.items()},
            "categories": {c: {m: v["categories"].get(c, {}).get("pass_rate") for m, v in modes.items()}
                           for c in categories}}
    return out
