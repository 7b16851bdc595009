"""compute_metrics on result rows: the per-problem table behind pass@k, the problems any sample solved, and the
outcome counts of generation and translation samples apart."""

from __future__ import annotations

import pytest

from codemill.eval.metrics import compute_metrics


def row(task_id: str, passed: bool, outcome: str | None = None, source: str | None = None) -> dict:
    r = {"task_id": task_id, "passed": passed, "outcome": outcome or ("passed" if passed else "wrong_answer")}
    if source:
        r["source_language"] = source
    return r


def test_pass_at_k_solved_problems_and_outcomes():
    rows = ([row("Python/2", True), row("Python/2", False), row("Python/10", True), row("Python/10", True),
             row("Python/0", False, "timeout"), row("Python/0", False, "compile_error"),
             row("Go/2", False, "runtime_error"), row("Go/2", False)]
            + [row("Go/2", True, source="Python"), row("Go/2", False, "unfinished", source="Python")])
    m = compute_metrics(rows, ["Python", "Go"], [1, 2], [2], ["uniform"], {"Python": 1, "Go": 1},
                        resamples=20)
    python = m["generation"]["languages"]["Python"]
    assert python["problems"] == 3 and python["samples"] == 6
    assert python["pass_at_k"]["1"]["value"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert python["solved"] == [{"task_id": "Python/2", "n": 2, "c": 1}, {"task_id": "Python/10", "n": 2, "c": 2}]
    assert m["generation"]["languages"]["Go"]["solved"] == []
    assert m["outcomes"]["Python"]["passed"] == 3 and m["outcomes"]["Python"]["timeout"] == 1
    assert m["outcomes"]["Go"] == {**{o: 0 for o in m["outcomes"]["Go"]}, "runtime_error": 1, "wrong_answer": 1}
    assert m["translation"]["matrix"] == {"Python": {"Go": 0.5}}
    assert m["translation_outcomes"]["Go"]["unfinished"] == 1 and "Python" not in m["translation_outcomes"]


def test_no_rows_give_empty_metrics():
    m = compute_metrics([], ["Python"], [1], [1], ["uniform"], {"Python": 1}, resamples=10)
    assert m["generation"] == {} and m["outcomes"] == {} and m["translation"] == {}


def test_the_report_names_the_solved_problems():
    from codemill.eval.report import render_html

    rows = [row("Python/2", True), row("Python/2", False), row("Python/3", False)]
    metrics = compute_metrics(rows, ["Python"], [1], [1], ["uniform"], {"Python": 1}, resamples=10)
    page = render_html({"metrics": metrics, "samples": 3, "benchmark_check": {"passed": True}}, {})
    assert "Problems solved by at least one sample" in page and "Python/2 (1/2)" in page
    assert "Python/3" not in page
