"""stats.json of the dedup stage: duplicate rates per language and per kind.

The per-language document counts are one Arrow group-by (pyarrow, which the stage already uses: the lent GPU
machine that runs the whole recipe has no polars); the removals arrive already counted per (language, kind).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from codemill.dedup.resolve import KINDS

UNKNOWN_LANGUAGE = "unknown"


def language_docs(language_counts: pa.Table) -> dict[str, int]:
    """Documents per language (null languages counted as UNKNOWN_LANGUAGE), sorted by language."""
    languages = pc.fill_null(language_counts["language"], UNKNOWN_LANGUAGE)
    docs = pc.cast(language_counts["docs"], pa.int64())
    sums = pa.table({"language": languages, "docs": docs}).group_by("language").aggregate([("docs", "sum")])
    return dict(sorted(zip(sums["language"].to_pylist(), sums["docs_sum"].to_pylist())))


def dedup_stats(language_counts: pa.Table, removed_by_language: dict[tuple[str | None, str], int], n_docs: int) -> dict:
    """`language_counts`: (language, docs) of every input document; `removed_by_language`: removed documents
    per (language, kind). Removals of a language absent from the counts count in the totals only."""
    removed: dict[str, dict[str, int]] = {}
    by_kind = dict.fromkeys(KINDS, 0)
    for (language, kind), n in removed_by_language.items():
        removed.setdefault(language or UNKNOWN_LANGUAGE, dict.fromkeys(KINDS, 0))[kind] += int(n)
        by_kind[kind] += int(n)
    per_language = {}
    for language, docs in language_docs(language_counts).items():
        kinds = removed.get(language, dict.fromkeys(KINDS, 0))
        total = sum(kinds.values())
        per_language[language] = {"docs": docs, "kept": docs - total, "removed": kinds,
                                  "duplicate_rate": total / docs if docs else 0.0,
                                  "rate_by_kind": {k: v / docs if docs else 0.0 for k, v in kinds.items()}}
    total_removed = sum(by_kind.values())
    return {"docs": n_docs, "kept": n_docs - total_removed,
            "duplicate_rate": total_removed / n_docs if n_docs else 0.0,
            "removed_by_kind": by_kind,
            "rate_by_kind": {k: v / n_docs if n_docs else 0.0 for k, v in by_kind.items()},
            "per_language": per_language}
