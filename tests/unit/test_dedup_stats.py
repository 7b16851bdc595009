"""dedup's stats.json: per-language documents and removals by kind (an Arrow group-by), totals, and
rates; documents without a language count as "unknown"."""

from __future__ import annotations

import pyarrow as pa
import pytest

from codemill.dedup.resolve import KIND_CONTAMINATION, KIND_EXACT, KIND_NEAR, KINDS
from codemill.dedup.stats import dedup_stats


def counts(rows: list[tuple[str | None, int]]) -> pa.Table:
    return pa.table({"language": pa.array([r[0] for r in rows], pa.string()),
                     "docs": pa.array([r[1] for r in rows], pa.int64())})


def test_per_language_removals_by_kind_and_rates():
    language_counts = counts([("Python", 60), ("Go", 30), ("Python", 40), (None, 10)])
    removed = {("Python", KIND_EXACT): 10, ("Python", KIND_NEAR): 15, ("Go", KIND_CONTAMINATION): 3,
               (None, KIND_EXACT): 5}
    stats = dedup_stats(language_counts, removed, n_docs=140)
    assert list(stats["per_language"]) == ["Go", "Python", "unknown"]
    python = stats["per_language"]["Python"]
    assert python["docs"] == 100 and python["kept"] == 75
    assert python["removed"] == {KIND_EXACT: 10, KIND_NEAR: 15, KIND_CONTAMINATION: 0}
    assert python["duplicate_rate"] == pytest.approx(0.25) and python["rate_by_kind"][KIND_NEAR] == pytest.approx(0.15)
    assert stats["per_language"]["Go"]["removed"] == {KIND_EXACT: 0, KIND_NEAR: 0, KIND_CONTAMINATION: 3}
    assert stats["per_language"]["unknown"] == {
        "docs": 10, "kept": 5, "removed": {KIND_EXACT: 5, KIND_NEAR: 0, KIND_CONTAMINATION: 0},
        "duplicate_rate": 0.5, "rate_by_kind": {KIND_EXACT: 0.5, KIND_NEAR: 0.0, KIND_CONTAMINATION: 0.0}}
    assert stats["removed_by_kind"] == {KIND_EXACT: 15, KIND_NEAR: 15, KIND_CONTAMINATION: 3}
    assert stats["kept"] == 107 and stats["duplicate_rate"] == pytest.approx(33 / 140)


def test_nothing_removed_and_nothing_at_all():
    stats = dedup_stats(counts([("Rust", 7)]), {}, n_docs=7)
    assert stats["per_language"]["Rust"]["removed"] == dict.fromkeys(KINDS, 0)
    assert stats["kept"] == 7 and stats["duplicate_rate"] == 0.0
    empty = dedup_stats(counts([]), {}, n_docs=0)
    assert empty["per_language"] == {} and empty["removed_by_kind"] == dict.fromkeys(KINDS, 0)
    assert empty["duplicate_rate"] == 0.0 and empty["rate_by_kind"] == dict.fromkeys(KINDS, 0.0)


def test_removals_of_a_language_not_in_the_counts_count_in_the_totals_only():
    stats = dedup_stats(counts([("C", 4)]), {("C", KIND_EXACT): 1, ("Lua", KIND_NEAR): 2}, n_docs=6)
    assert list(stats["per_language"]) == ["C"]
    assert stats["removed_by_kind"][KIND_NEAR] == 2 and stats["kept"] == 3
