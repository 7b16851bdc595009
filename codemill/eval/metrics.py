"""From per-sample results to the paper's metrics: pass@k per language and averaged (with bootstrap CIs),
pass@k_π per strategy, the translation matrix, and the outcome distribution per language."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from codemill.eval import passk
from codemill.eval.languages import OUTCOMES
from codemill.humaneval import language_of_task, problem_number


def _counts(rows: Iterable[dict]) -> dict[tuple[str | None, str], tuple[int, int]]:
    """(source_language or None, task_id) -> (n, c)."""
    n: Counter = Counter()
    c: Counter = Counter()
    for r in rows:
        key = (r.get("source_language"), r["task_id"])
        n[key] += 1
        c[key] += bool(r["passed"])
    return {key: (n[key], c[key]) for key in n}


def compute_metrics(rows: list[dict], languages: list[str], ks: list[int], budget_ks: list[int],
                    strategies: list[str], weights: dict[str, float], translation_k: int = 1,
                    resamples: int = 1000, seed: int = 0) -> dict:
    counts = _counts(rows)
    gen = {tid: nc for (src, tid), nc in counts.items() if src is None}
    out: dict = {"generation": {}, "translation": {}, "allocation": [], "outcomes": {}}

    # pass@k per language, and the average over languages (the paper's "average" column).
    if gen:
        per_lang: dict[str, dict] = {}
        for language in languages:
            lang_counts = [nc for tid, nc in sorted(gen.items()) if language_of_task(tid) == language]
            if not lang_counts:
                continue
            per_lang[language] = {
                "problems": len(lang_counts), "samples": sum(n for n, _ in lang_counts),
                "pass_at_k": {str(k): passk.summarize(lang_counts, k, resamples, seed).to_json() for k in ks}}
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
    dist: dict[str, Counter] = defaultdict(Counter)
    tdist: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        (tdist if r.get("source_language") else dist)[language_of_task(r["task_id"])][r["outcome"]] += 1
    out["outcomes"] = {lang: {o: dist[lang].get(o, 0) for o in OUTCOMES} for lang in languages if lang in dist}
    if tdist:
        out["translation_outcomes"] = {lang: {o: tdist[lang].get(o, 0) for o in OUTCOMES}
                                       for lang in languages if lang in tdist}
    return out
