"""The crawl's stats: every listed repository counted once, under one outcome and one reason.

    repos_listed = repos_refused_by_selection + repos_selected + repos_rejected_after_fetch + repos_failed
    repos_resumed + repos_fetched_this_run = repos_selected + repos_rejected_after_fetch

Each outcome but `selected` is broken down by reason (`*_by_reason`); repositories past `max_repos` are
not listed at all (`stopped_at_max_repos` says the listing stopped there). The counts are read back from
the output (markers and skip records), so a resumed run counts what earlier runs did too, and only what
this run's settings made. `check_counts` states the identities, for tests and for the stage itself.
"""

from __future__ import annotations

from collections import Counter

from codemill import storage
from codemill.crawl.outputs import part_keys, part_uri, read_markers
from codemill.crawl.plan import Plan
from codemill.crawl.schema import SKIPPED_SCHEMA
from codemill.stages import CRAWL_SKIPPED

OUTCOMES = ("repos_refused_by_selection", "repos_selected", "repos_rejected_after_fetch", "repos_failed")
BY_REASON = {"repos_refused_by_selection": "repos_refused_by_reason",
             "repos_rejected_after_fetch": "repos_rejected_by_reason", "repos_failed": "repos_failed_by_reason"}


def reason_family(reason: str) -> str:
    """`fetch: HTTP 404 ...` -> `fetch`, so stats group reasons while skipped/ keeps the full text."""
    return reason.split(":", 1)[0]


def summarize(out: str, plan: Plan, fetched_this_run: int, failures: dict[str, str],
              source_stats: dict | None = None) -> dict:
    """stats.json's content. `failures`: full name -> reason, of every repository that failed this run
    (fetch, task or listing); the others of this run have markers."""
    markers = read_markers(out)
    selected = [m for m in markers.values() if m["selected"]]
    rejected = [m for m in markers.values() if not m["selected"]]
    file_skips: Counter[str] = Counter()
    for key in sorted(part_keys(out, CRAWL_SKIPPED)):
        if key in markers:  # a failed repository's part holds only its failure, counted below
            table = storage.read_table(part_uri(out, CRAWL_SKIPPED, key), columns=["reason"], schema=SKIPPED_SCHEMA)
            file_skips.update(reason_family(r) for r in table.column("reason").to_pylist())
    return {
        "repos_listed": plan.listed,
        "repos_refused_by_selection": len(plan.refused),
        "repos_selected": len(selected),
        "repos_rejected_after_fetch": len(rejected),
        "repos_failed": len(failures),
        "repos_resumed": len(plan.resumed),
        "repos_fetched_this_run": fetched_this_run,
        "stopped_at_max_repos": plan.stopped_at_max_repos,
        "repos_refused_by_reason": dict(Counter(reason for _, _, reason in plan.refused)),
        "repos_rejected_by_reason": dict(Counter(m["reject_reason"] or "" for m in rejected)),
        "repos_failed_by_reason": dict(Counter(reason_family(r) for r in failures.values())),
        "failed_repos": sorted(failures),
        "files": sum(m["n_files"] or 0 for m in selected),
        "files_skipped_by_reason": dict(file_skips),
        "repos_by_main_language": dict(Counter(m["main_language"] or "unknown" for m in selected)),
        "source": dict(source_stats or {}),  # e.g. GitHub search calls, slices, unreachable results
    }


def counts(stats: dict) -> dict:
    """The manifest's counts: the numbers of stats.json, without its breakdowns and lists."""
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, bool))}


def check_counts(stats: dict) -> list[str]:
    """Problems with the identities above (an empty list when the counts add up)."""
    problems = []
    names = ("repos_listed", *OUTCOMES, "repos_resumed", "repos_fetched_this_run", "files")
    for name in names:
        value = stats.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{name} is {value!r}, not a count")
    if problems:
        return problems
    outcomes = sum(stats[k] for k in OUTCOMES)
    if stats["repos_listed"] != outcomes:
        problems.append(f"repos_listed {stats['repos_listed']} != refused + selected + rejected + failed {outcomes}")
    for total, breakdown in BY_REASON.items():
        parts = stats.get(breakdown, {})
        if sum(parts.values()) != stats[total]:
            problems.append(f"{breakdown} sums to {sum(parts.values())}, not {total} {stats[total]}")
    made = stats["repos_selected"] + stats["repos_rejected_after_fetch"]
    if stats["repos_resumed"] + stats["repos_fetched_this_run"] != made:
        problems.append(f"repos_resumed + repos_fetched_this_run = "
                        f"{stats['repos_resumed'] + stats['repos_fetched_this_run']}, not selected + rejected {made}")
    failed_listed = len(stats.get("failed_repos", []))
    if failed_listed != stats["repos_failed"]:
        problems.append(f"failed_repos lists {failed_listed}, not repos_failed {stats['repos_failed']}")
    languages = sum(stats.get("repos_by_main_language", {}).values())
    if languages != stats["repos_selected"]:
        problems.append(f"repos_by_main_language sums to {languages}, not repos_selected {stats['repos_selected']}")
    return problems
