"""stats.json of the dedup stage: duplicate rates per language and per kind."""

from __future__ import annotations

import pyarrow as pa

from codemill.dedup.resolve import KINDS

UNKNOWN_LANGUAGE = "unknown"


def dedup_stats(language_counts: pa.Table, removed_by_language: dict[tuple[str | None, str], int], n_docs: int) -> dict:
    """`language_counts`: (language, docs) of every input document; `removed_by_language`: removed documents
    per (language, kind)."""
    docs_per_language: dict[str, int] = {}
    for lang, n in zip(language_counts["language"].to_pylist(), language_counts["docs"].to_pylist()):
        docs_per_language[lang or UNKNOWN_LANGUAGE] = docs_per_language.get(lang or UNKNOWN_LANGUAGE, 0) + int(n)
    removed: dict[str, dict[str, int]] = {}
    for (lang, kind), n in removed_by_language.items():
        per_kind = removed.setdefault(lang or UNKNOWN_LANGUAGE, dict.fromkeys(KINDS, 0))
        per_kind[kind] += n
    per_language = {}
    for lang, docs in sorted(docs_per_language.items()):
        kinds = removed.get(lang, dict.fromkeys(KINDS, 0))
        total = sum(kinds.values())
        per_language[lang] = {"docs": docs, "kept": docs - total, "removed": kinds,
                              "duplicate_rate": total / docs if docs else 0.0,
                              "rate_by_kind": {k: v / docs if docs else 0.0 for k, v in kinds.items()}}
    by_kind = {k: sum(r[k] for r in removed.values()) for k in KINDS}
    total_removed = sum(by_kind.values())
    return {"docs": n_docs, "kept": n_docs - total_removed,
            "duplicate_rate": total_removed / n_docs if n_docs else 0.0,
            "removed_by_kind": by_kind,
            "rate_by_kind": {k: v / n_docs if n_docs else 0.0 for k, v in by_kind.items()},
            "per_language": per_language}
