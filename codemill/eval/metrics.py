"""From per-sample results to the paper's metrics: pass@k per language and averaged (with bootstrap CIs),
pass@k_π per strategy, the translation matrix, the outcome distribution per language, and which problems any
sample solved.

The per-problem table (samples n and passes c of every (source language, task)) and the outcome counts are
group-bys over the result rows: polars, imported here, where scoring runs (the sandbox's machine), not in the
stages a GPU machine runs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from codemill.eval import passk
from codemill.eval.languages import OUTCOMES
from codemill.humaneval import language_of_task, problem_number


def _frame(rows: Iterable[dict]):
    import polars as pl

    rows = list(rows)
    return pl.DataFrame({"source_language": [r.get("source_language") for r in rows],
                         "task_id": [r["task_id"] for r in rows],
                         "language": [language_of_task(r["task_id"]) for r in rows],
                         "passed": [bool(r["passed"]) for r in rows], "outcome": [r["outcome"] for r in rows]},
                        schema={"source_language": pl.String, "task_id": pl.String, "language": pl.String,
                                "passed": pl.Boolean, "outcome": pl.String})


def _counts(frame) -> dict[tuple[str | None, str], tuple[int, int]]:
    """(source_language or None, task_id) -> (n, c): the per-problem table."""
    import polars as pl

    table = frame.group_by(["source_language", "task_id"]).agg(n=pl.len(), c=pl.col("passed").sum())
    return {(src, tid): (int(n), int(c)) for src, tid, n, c in table.iter_rows()}


def _outcomes(frame, languages: list[str]) -> dict[str, dict[str, int]]:
    """Outcome counts per language of the given rows, every outcome class present (0 where none)."""
    import polars as pl

    counted = frame.group_by(["language", "outcome"]).agg(pl.len())
    found: dict[str, Counter] = defaultdict(Counter)
    for language, outcome, n in counted.iter_rows():
        found[language][outcome] = int(n)
    return {lang: {o: found[lang].get(o, 0) for o in OUTCOMES} for lang in languages if lang in found}


def compute_metrics(rows: list[dict], languages: list[str], ks: list[int], budget_ks: list[int],
                    strategies: list[str], weights: dict[str, float], translation_k: int = 1,
                    resamples: int = 1000, seed: int = 0) -> dict:
    import polars as pl

    frame = _frame(rows)
    counts = _counts(frame)
    gen = {tid: nc for (src, tid), nc in counts.items() if src is None}
    out: dict = {"generation": {}, "translation": {}, "allocation": [], "outcomes": {}}

    # pass@k per language, and the average over languages (the paper's "average" column).
    if gen:
        per_lang: dict[str, dict] = {}
        for language in languages:
            lang_counts = [nc for tid, nc in sorted(gen.items()) if language_of_task(tid) == language]
            if not lang_counts:
                continue
            solved = sorted((tid for tid, (_, c) in gen.items() if c and language_of_task(tid) == language),
                            key=lambda tid: int(problem_number(tid)))
            per_lang[language] = {
                "problems": len(lang_counts), "samples": sum(n for n, _ in lang_counts),
                "pass_at_k": {str(k): passk.summarize(lang_counts, k, resamples, seed).to_json() for k in ks},
                # The problems any sample passed, with how many of how many: what pass@k stands on.
                "solved": [{"task_id": tid, "n": gen[tid][0], "c": gen[tid][1]} for tid in solved]}
        average = {}
        for k in ks:
            values = [per_lang[lang]["pass_at_k"][str(k)]["value"] for lang in per_lang]
            average[str(k)] = passk.mean_or_none(values)
        out["generation"] = {"languages": per_lang, "average": average}

        # Budget allocation over languages, per problem number.
        per_problem: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
        for tid, nc in gen.items():
            per_problem[int(problem_number(tid))][language_of_task(tid)] = nc
        present = [lang for lang in languages if lang in per_lang]
        for k in budget_ks:
            for strategy in strategies:
                a = passk.allocation_summary(per_problem, k, strategy, present, weights, resamples, seed)
                out["allocation"].append(a.to_json())

    # Translation: pass@k for every (source, target) pair.
    trans = {(src, tid): nc for (src, tid), nc in counts.items() if src is not None}
    if trans:
        matrix: dict[str, dict[str, float | None]] = {}
        for (src, tid), _ in sorted(trans.items()):
            tgt = language_of_task(tid)
            matrix.setdefault(src, {}).setdefault(tgt, None)
        for src in matrix:
            for tgt in matrix[src]:
                cs = [nc for (s, tid), nc in trans.items() if s == src and language_of_task(tid) == tgt]
                matrix[src][tgt] = passk.summarize(cs, translation_k, resamples, seed).value
        out["translation"] = {"k": translation_k, "matrix": matrix}

    # Outcome distribution per language (the paper's Figure 7, plus timeout): generation samples, and
    # translation samples by target language.
    generation_rows = frame.filter(pl.col("source_language").is_null())
    translation_rows = frame.filter(pl.col("source_language").is_not_null())
    out["outcomes"] = _outcomes(generation_rows, languages)
    if translation_rows.height:
        out["translation_outcomes"] = _outcomes(translation_rows, languages)
    return out
