"""pass@k (SPEC §8): unbiased, numerically stable, undefined when fewer than k samples were drawn; bootstrap
confidence intervals over problems; pass@k_π, the budget allocated over languages.

pass@k for one problem with n samples of which c pass is 1 − C(n−c, k) / C(n, k). The ratio of binomials is
computed as a product of k factors (1 − c/(n−i)), never as factorials, so n = 10,000 is as exact as n = 10.
When n < k the estimate does not exist (human-eval#35 returned 1.0 there); it is `None` here, and so is any
average over problems that contains one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# SPEC §8: the budget of 100 split by CodeGeeX-13B's corpus shares, and the paper's k values.
PAPER_WEIGHTS = {"Python": 32, "C++": 33, "Java": 20, "JavaScript": 9, "Go": 6}
PAPER_K = (1, 10, 100)
STRATEGIES = ("best_single", "uniform", "weighted")


def miss_probability(n: int, c: int, k: int) -> float | None:
    """C(n−c, k) / C(n, k): the chance that k samples drawn without replacement all fail; None if n < k."""
    if n < 0 or c < 0 or c > n or k < 0:
        raise ValueError(f"need 0 <= c <= n and k >= 0, got n={n}, c={c}, k={k}")
    if k > n:
        return None
    if k == 0:
        return 1.0
    if n - c < k:
        return 0.0
    return float(np.prod(1.0 - c / np.arange(n - k + 1, n + 1, dtype=np.float64)))


def pass_at_k(n: int, c: int, k: int) -> float | None:
    """Unbiased pass@k of one problem; None when n < k (undefined, not 1.0)."""
    miss = miss_probability(n, c, k)
    return None if miss is None else 1.0 - miss


def mean_or_none(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def pass_at_k_per_problem(counts: Sequence[tuple[int, int]], k: int) -> list[float | None]:
    return [pass_at_k(n, c, k) for n, c in counts]


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean over problems (problems resampled with replacement)."""
    if not values or any(v is None for v in values):
        return None
    arr = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(resamples, len(arr)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass
class PassAtK:
    k: int
    value: float | None
    ci: tuple[float, float] | None
    problems: int
    undefined: int   # problems with fewer than k samples

    def to_json(self) -> dict:
        return {"k": self.k, "value": self.value, "ci95": list(self.ci) if self.ci else None,
                "problems": self.problems, "undefined_problems": self.undefined}


def summarize(counts: Sequence[tuple[int, int]], k: int, resamples: int = 1000, seed: int = 0) -> PassAtK:
    per = pass_at_k_per_problem(counts, k)
    undefined = sum(v is None for v in per)
    return PassAtK(k, mean_or_none(per), bootstrap_ci(per, resamples=resamples, seed=seed), len(per), undefined)


# ------------------------------------------------------------------- budget allocation over languages


def allocation_pass(counts: Mapping[str, tuple[int, int]], budget: Mapping[str, int]) -> float | None:
    """1 − Π_i C(n_i − c_i, k_i) / C(n_i, k_i) for one problem: language i gets k_i of the budget and has n_i
    samples of which c_i pass (SPEC §8's pass@k_π). None when some k_i > n_i."""
    miss = 1.0
    for language, k_i in budget.items():
        if k_i == 0:
            continue
        n, c = counts.get(language, (0, 0))
        m = miss_probability(n, c, k_i)
        if m is None:
            return None
        miss *= m
    return 1.0 - miss


def split_budget(k: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer shares of k proportional to weights, summing to k (largest remainder; ties in given order)."""
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    exact = {lang: k * w / total for lang, w in weights.items()}
    shares = {lang: math.floor(x) for lang, x in exact.items()}
    left = k - sum(shares.values())
    for lang in sorted(exact, key=lambda x: -(exact[x] - shares[x]))[:left]:
        shares[lang] += 1
    return shares


def uniform_budget(k: int, languages: Sequence[str]) -> dict[str, int]:
    return split_budget(k, {lang: 1.0 for lang in languages})


@dataclass
class Allocation:
    strategy: str
    k: int
    budget: dict[str, int]
    value: float | None
    ci: tuple[float, float] | None
    problems: int

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "k": self.k, "budget": self.budget, "value": self.value,
                "ci95": list(self.ci) if self.ci else None, "problems": self.problems}


def allocation_summary(per_problem: Mapping[int, Mapping[str, tuple[int, int]]], k: int, strategy: str,
                       languages: Sequence[str], weights: Mapping[str, float] | None = None,
                       resamples: int = 1000, seed: int = 0) -> Allocation:
    """pass@k_π averaged over the problems that have samples in every language of the allocation.

    `per_problem`: problem number -> language -> (n, c). Best Single puts the whole budget on the language
    with the highest average pass@k; Uniform splits it evenly; Weighted in proportion to `weights` (SPEC §8's
    corpus shares by default)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if strategy == "best_single":
        candidates = [allocation_summary(per_problem, k, "weighted", [lang], {lang: 1.0}, resamples, seed)
                      for lang in languages]
        defined = [a for a in candidates if a.value is not None]
        if not defined:
            return Allocation(strategy, k, {}, None, None, 0)
        best = max(defined, key=lambda a: a.value)
        return Allocation(strategy, k, best.budget, best.value, best.ci, best.problems)
    if strategy == "uniform":
        budget = uniform_budget(k, languages)
    else:
        w = {lang: (weights or PAPER_WEIGHTS).get(lang, 0.0) for lang in languages}
        budget = split_budget(k, w)
    used = [lang for lang, share in budget.items() if share > 0]
    problems = sorted(p for p, langs in per_problem.items() if all(lang in langs for lang in used))
    values = [allocation_pass(per_problem[p], budget) for p in problems]
    if not problems:
        return Allocation(strategy, k, budget, None, None, 0)
    return Allocation(strategy, k, budget, mean_or_none(values), bootstrap_ci(values, resamples=resamples, seed=seed),
                      len(problems))
