"""pass@k against exact binomials, pass@k_π against a direct enumeration of SPEC §8's formula."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb

import pytest

from codemill.eval import passk


def exact_pass(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 200])
def test_pass_at_k_matches_exact_binomials(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert passk.pass_at_k(n, c, k) == pytest.approx(float(exact_pass(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    # C(10000, 100) overflows floats; the product form does not.
    n, c, k = 10_000, 37, 100
    expected = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert passk.pass_at_k(n, c, k) == pytest.approx(float(expected), rel=1e-12)
    assert passk.pass_at_k(10_000, 0, 100) == 0.0
    assert passk.pass_at_k(10_000, 10_000, 100) == 1.0


def test_pass_at_k_is_undefined_when_n_below_k():
    # human-eval#35: 1.0 was returned for k > n even when no sample passed.
    assert passk.pass_at_k(5, 0, 10) is None
    assert passk.pass_at_k(5, 5, 10) is None
    assert passk.mean_or_none([0.5, None]) is None
    s = passk.summarize([(5, 0), (20, 3)], 10)
    assert s.value is None and s.undefined == 1 and s.ci is None


def test_pass_at_1_is_the_fraction_passing():
    assert passk.pass_at_k(200, 46, 1) == pytest.approx(46 / 200)


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = [0.0] * 50 + [1.0] * 50
    lo, hi = passk.bootstrap_ci(values, resamples=2000, seed=1)
    assert lo < 0.5 < hi
    assert 0.35 < lo and hi < 0.65
    assert passk.bootstrap_ci(values, resamples=2000, seed=1) == (lo, hi)
    assert passk.bootstrap_ci([0.3] * 10) == pytest.approx((0.3, 0.3))


def direct_allocation(samples: dict[str, list[bool]], budget: dict[str, int]) -> Fraction:
    """E[1 − Π_i 1{all k_i drawn samples of language i fail}] by enumerating every draw."""
    draws = [list(itertools.combinations(samples[lang], budget[lang])) for lang in budget]
    hit = total = 0
    for combo in itertools.product(*draws):
        total += 1
        hit += any(any(chosen) for chosen in combo)
    return Fraction(hit, total)


def test_allocation_pass_matches_direct_enumeration():
    samples = {"Python": [True, False, False, False, False, True],
               "C++": [False, False, False, False, False],
               "Go": [False, True, False, False]}
    counts = {lang: (len(v), sum(v)) for lang, v in samples.items()}
    for budget in ({"Python": 2, "C++": 1, "Go": 1}, {"Python": 1, "C++": 3, "Go": 2}, {"Python": 0, "C++": 5, "Go": 1},
                   {"Python": 3, "C++": 0, "Go": 0}):
        nonzero = {lang: k for lang, k in budget.items() if k}
        assert passk.allocation_pass(counts, budget) == pytest.approx(float(direct_allocation(samples, nonzero)))
    assert passk.allocation_pass(counts, {"Go": 5}) is None  # only 4 Go samples


def test_split_budget_paper_weights_and_uniform():
    langs = ["Python", "C++", "Java", "JavaScript", "Go"]
    assert passk.split_budget(100, passk.PAPER_WEIGHTS) == {"Python": 32, "C++": 33, "Java": 20, "JavaScript": 9,
                                                            "Go": 6}
    assert passk.uniform_budget(100, langs) == dict.fromkeys(langs, 20)
    shares = passk.split_budget(10, passk.PAPER_WEIGHTS)
    assert sum(shares.values()) == 10
    assert shares["C++"] >= shares["Python"] >= shares["Java"] >= shares["JavaScript"] >= shares["Go"]


def test_allocation_strategies():
    # Problem 0: only Python solves it; problem 1: only Go solves it. Best single language = Python or Go
    # (0.5 each at k=2 with n=2 per language); a uniform split over both solves everything.
    per_problem = {0: {"Python": (2, 2), "Go": (2, 0)}, 1: {"Python": (2, 0), "Go": (2, 2)}}
    best = passk.allocation_summary(per_problem, 2, "best_single", ["Python", "Go"])
    uniform = passk.allocation_summary(per_problem, 2, "uniform", ["Python", "Go"])
    weighted = passk.allocation_summary(per_problem, 2, "weighted", ["Python", "Go"], {"Python": 1, "Go": 0})
    assert best.value == pytest.approx(0.5) and sum(best.budget.values()) == 2
    assert uniform.value == pytest.approx(1.0) and uniform.budget == {"Python": 1, "Go": 1}
    assert weighted.value == pytest.approx(0.5) and weighted.budget == {"Python": 2, "Go": 0}
    assert passk.allocation_summary(per_problem, 4, "uniform", ["Python", "Go"]).value == pytest.approx(1.0)
    assert passk.allocation_summary(per_problem, 6, "uniform", ["Python", "Go"]).value is None
