"""What a crawl run does with each listed repository, decided on the driver before any fetch.

Each listed repository is refused by selection, kept as it is (its completion marker was made under the
current settings), fetched (no marker, or one made under other settings), or failed (its listing could
not describe it). `max_repos` counts the repositories kept, fetched or failed, in listing order; listing
stops there. Whatever an earlier run left for a repository that is none of these (refused now, past
`max_repos`, no longer listed) is removed by the run (`orphan_keys`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from codemill.crawl.keys import repo_key
from codemill.crawl.outputs import repo_config_hash
from codemill.crawl.selection import rejection_reason
from codemill.crawl.sources.base import RepoRef

DUPLICATE_NAME = "duplicate_name"


@dataclass
class Plan:
    listed: int = 0
    refused: list[tuple[str, str, str]] = field(default_factory=list)   # (repo, "", reason): skipped/ rows
    resumed: dict[str, str] = field(default_factory=dict)               # key -> full name
    todo: list[tuple[RepoRef, str]] = field(default_factory=list)       # (ref, config hash)
    list_failures: list[tuple[RepoRef, str]] = field(default_factory=list)  # (ref, reason)
    stopped_at_max_repos: bool = False

    def kept_keys(self) -> set[str]:
        """Keys whose outputs belong to this run (done already, to be done, or failed)."""
        return (set(self.resumed) | {repo_key(r.full_name) for r, _ in self.todo}
                | {repo_key(r.full_name) for r, _ in self.list_failures})

    def orphan_keys(self, existing: Iterable[str]) -> set[str]:
        return set(existing) - self.kept_keys()


def plan_crawl(refs: Iterable[RepoRef], config, excluded: frozenset[str], markers: dict[str, dict]) -> Plan:
    """`markers`: key -> completion marker row (`codemill.crawl.outputs.read_markers`)."""
    plan = Plan()
    seen: set[str] = set()
    for ref in refs:
        candidates = len(plan.resumed) + len(plan.todo) + len(plan.list_failures)
        if config.max_repos is not None and candidates >= config.max_repos:
            plan.stopped_at_max_repos = True
            break
        plan.listed += 1
        # Repository names are case-insensitive on GitHub; a second spelling is the same repository.
        lower = ref.full_name.lower()
        reason = DUPLICATE_NAME if lower in seen else rejection_reason(ref, config.selection, excluded)
        seen.add(lower)
        if reason is not None:
            plan.refused.append((ref.full_name, "", reason))
        elif ref.error is not None:
            plan.list_failures.append((ref, f"list: {ref.error}"))
        else:
            key, wanted = repo_key(ref.full_name), repo_config_hash(config, ref)
            marker = markers.get(key)
            if marker is not None and marker.get("config_hash") == wanted:
                plan.resumed[key] = ref.full_name
            else:
                plan.todo.append((ref, wanted))
    return plan
