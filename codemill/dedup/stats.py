"""stats.json of the dedup stage: duplicate rates per language and per kind.

A per-language table (documents, removed per kind) is a group-by and a pivot: polars, imported here only,
where the driver writes the stats (the GPU machine, which never runs dedup, has no polars).
"""

from __future__ import annotations

import pyarrow as pa

from codemill.dedup.resolve import KINDS

UNKNOWN_LANGUAGE = "unknown"


def language_table(language_counts: pa.Table, removed_by_language: dict[tuple[str | None, str], int]):
    """One row per language of the input: `docs`, then one column per removal kind (KINDS order), 0 where
    none; sorted by language. Removed documents of a language absent from the counts are left out."""
    import polars as pl

    docs = (pl.from_arrow(language_counts.select(["language", "docs"]))
            .with_columns(pl.col("language").fill_null(UNKNOWN_LANGUAGE), pl.col("docs").cast(pl.Int64))
            .group_by("language").agg(pl.col("docs").sum()))
    removed = removed_frame(removed_by_language)
    per_kind = (removed.pivot(on="kind", index="language", values="n", aggregate_function="sum")
                if removed.height else pl.DataFrame(schema={"language": pl.String}))
    table = docs.join(per_kind, on="language", how="left")
    return (table.with_columns([pl.col(k).fill_null(0).cast(pl.Int64) if k in table.columns else pl.lit(0, pl.Int64)
                                .alias(k) for k in KINDS])
            .select(["language", "docs", *KINDS]).sort("language"))


def removed_frame(removed_by_language: dict[tuple[str | None, str], int]):
    import polars as pl

    rows = [(lang or UNKNOWN_LANGUAGE, kind, int(n)) for (lang, kind), n in removed_by_language.items()]
    return pl.DataFrame(rows, schema={"language": pl.String, "kind": pl.String, "n": pl.Int64}, orient="row")


def dedup_stats(language_counts: pa.Table, removed_by_language: dict[tuple[str | None, str], int], n_docs: int) -> dict:
    """`language_counts`: (language, docs) of every input document; `removed_by_language`: removed documents
    per (language, kind)."""
    import polars as pl

    per_language = {}
    for row in language_table(language_counts, removed_by_language).iter_rows(named=True):
        docs, kinds = row["docs"], {k: row[k] for k in KINDS}
        total = sum(kinds.values())
        per_language[row["language"]] = {"docs": docs, "kept": docs - total, "removed": kinds,
                                         "duplicate_rate": total / docs if docs else 0.0,
                                         "rate_by_kind": {k: v / docs if docs else 0.0 for k, v in kinds.items()}}
    sums = removed_frame(removed_by_language).group_by("kind").agg(pl.col("n").sum())
    by_kind = dict.fromkeys(KINDS, 0) | {kind: int(n) for kind, n in sums.iter_rows() if kind in KINDS}
    total_removed = sum(by_kind.values())
    return {"docs": n_docs, "kept": n_docs - total_removed,
            "duplicate_rate": total_removed / n_docs if n_docs else 0.0,
            "removed_by_kind": by_kind,
            "rate_by_kind": {k: v / n_docs if n_docs else 0.0 for k, v in by_kind.items()},
            "per_language": per_language}
