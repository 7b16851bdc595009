"""The filter's statistics: a small table per decided batch (computed where the batch is), merged into
`stats.json` on the driver.

`stats.json` holds, in files and in bytes (UTF-8 bytes of the content as crawled):
- `files` / `bytes`: input, kept, rejected (and `kept_output` bytes, after PEP 8 formatting);
- `by_reason`: rejected files by the first rule they fail (the reason recorded in rejected/);
- `by_rule`: every file failing each rule, whatever the order (a file may count under several rules);
- `by_language`: kept and rejected files per identified language;
- `autogen_signals`: files flagged auto-generated, by signal (name, marker, minified);
- `pep8`: kept Python files by formatting outcome (formatted, unchanged, unparsable, failed).
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from codemill.filter import rules
from codemill.filter.autogen import SIGNALS
from codemill.filter.pep8 import STATUSES

KEPT = "kept"
STATS_SCHEMA = pa.schema([("kind", pa.string()), ("key", pa.string()), ("language", pa.string()),
                          ("files", pa.int64()), ("bytes", pa.int64()), ("output_bytes", pa.int64())])


def _grouped(kind: str, keys: pa.Array, language: pa.Array, input_bytes: pa.Array, output_bytes: pa.Array) -> pa.Table:
    table = pa.table({"key": keys, "language": language, "bytes": input_bytes, "output_bytes": output_bytes})
    table = table.filter(pc.is_valid(table.column("key")))
    grouped = table.group_by(["key", "language"]).aggregate(
        [("bytes", "count"), ("bytes", "sum"), ("output_bytes", "sum")])
    n = grouped.num_rows
    return pa.table([pa.array([kind] * n, pa.string()), grouped.column("key"), grouped.column("language"),
                     grouped.column("bytes_count"), grouped.column("bytes_sum"), grouped.column("output_bytes_sum")],
                    schema=STATS_SCHEMA)


def batch_stats(decided: pa.Table, config) -> pa.Table:
    """Counts of one decided batch (after `rules.decide`, and `pep8.format_python` when enabled)."""
    if decided.num_rows == 0:
        return STATS_SCHEMA.empty_table()
    kept = pc.is_null(decided.column("reason"))
    language = pc.fill_null(decided.column("language"), "")
    input_bytes = decided.column("utf8_bytes")
    output_bytes = pc.if_else(kept, decided.column("size_bytes"), 0)
    parts = [_grouped("outcome", pc.fill_null(decided.column("reason"), KEPT), language, input_bytes, output_bytes),
             _grouped("autogen", decided.column("autogen"), language, input_bytes, output_bytes)]
    if "pep8" in decided.column_names:
        parts.append(_grouped("pep8", decided.column("pep8"), language, input_bytes, output_bytes))
    failed = rules.failures(decided, config)
    sizes = input_bytes.to_numpy()
    rule_keys = list(failed)
    parts.append(pa.table([pa.array(["rule"] * len(rule_keys)), pa.array(rule_keys), pa.array([""] * len(rule_keys)),
                           pa.array([int(failed[r].sum()) for r in rule_keys], pa.int64()),
                           pa.array([int(sizes[failed[r]].sum()) for r in rule_keys], pa.int64()),
                           pa.array([0] * len(rule_keys), pa.int64())], schema=STATS_SCHEMA))
    return pa.concat_tables(parts)


def summarize(tables: Iterable[pa.Table]) -> dict:
    """Merge the per-batch tables into the `stats.json` document."""
    table = pa.concat_tables([STATS_SCHEMA.empty_table(), *tables])
    totals = table.group_by(["kind", "key", "language"]).aggregate(
        [("files", "sum"), ("bytes", "sum"), ("output_bytes", "sum")]).to_pylist()

    def count(files: int = 0, size: int = 0) -> dict:
        return {"files": int(files), "bytes": int(size)}

    by_reason = {r: count() for r in rules.REASONS}
    by_rule = {r: count() for r in rules.REASONS}
    autogen = {s: count() for s in SIGNALS}
    pep8 = {s: count() for s in STATUSES}
    by_language: dict[str, dict] = {}
    kept = count()
    kept_output = 0
    for row in totals:
        kind, key, lang = row["kind"], row["key"], row["language"]
        files, size = row["files_sum"], row["bytes_sum"]
        target = {"rule": by_rule, "autogen": autogen, "pep8": pep8}.get(kind)
        if target is not None:
            target.setdefault(key, count())
            target[key] = count(target[key]["files"] + files, target[key]["bytes"] + size)
            continue
        # kind == "outcome"
        if key == KEPT:
            kept = count(kept["files"] + files, kept["bytes"] + size)
            kept_output += row["output_bytes_sum"]
        else:
            by_reason[key] = count(by_reason[key]["files"] + files, by_reason[key]["bytes"] + size)
        if lang:
            entry = by_language.setdefault(lang, {"kept_files": 0, "kept_bytes": 0, "rejected_files": 0,
                                                  "rejected_bytes": 0})
            side = "kept" if key == KEPT else "rejected"
            entry[f"{side}_files"] += int(files)
            entry[f"{side}_bytes"] += int(size)
    rejected = count(sum(v["files"] for v in by_reason.values()), sum(v["bytes"] for v in by_reason.values()))
    return {
        "files": {"input": kept["files"] + rejected["files"], "kept": kept["files"], "rejected": rejected["files"]},
        "bytes": {"input": kept["bytes"] + rejected["bytes"], "kept": kept["bytes"], "rejected": rejected["bytes"],
                  "kept_output": int(kept_output)},
        "by_reason": by_reason,
        "by_rule": by_rule,
        "by_language": dict(sorted(by_language.items(), key=lambda kv: -kv[1]["kept_bytes"])),
        "autogen_signals": autogen,
        "pep8": pep8,
    }


def kept_bytes_by_language(stats: dict) -> dict[str, int]:
    return {lang: v["kept_bytes"] for lang, v in stats["by_language"].items() if v["kept_bytes"] > 0}
