"""Search calls needed to enumerate every repository of a language: codemill's adaptive slicing against
fixed creation-date windows (one query family per month, or per day), in one run, against the local fake
GitHub of the tests (tests/github_fake.py) holding a scale model of GitHub's population.

Search calls are what bounds a crawl's listing: GitHub allows 30 search calls a minute per token. The
script counts calls and the repositories each approach finds against the fake's ground truth, and converts
calls into minutes of one token's search budget.

    bash scripts/in-netns.sh .venv/bin/python benchmarks/github_search_calls.py \
        --out benchmarks/results/github_search_calls.json
    bash scripts/in-netns.sh .venv/bin/python benchmarks/github_search_calls.py --smoke   # 2,000 repositories
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from github_fake import FakeClock, FakeGithub, make_population

from codemill.crawl.sources.github import (
    SEARCH_RESULT_CAP,
    GithubSource,
    GithubSourceConfig,
    SearchSlice,
)

SEARCH_CALLS_PER_MINUTE = 30  # GitHub's search budget for one authenticated token
TOKEN = "benchmark-token"


def fixed_windows(source: GithubSource, language: str, step: str) -> tuple[set[str], int]:
    """Every window of one month or one day, paged to GitHub's cap: the usual way to crawl search."""
    root = source.root_slice(language)
    found: set[str] = set()
    calls = 0
    start, end = root.created
    while start <= end:
        if step == "day":
            nxt = start + timedelta(days=1)
        else:
            nxt = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
        window = SearchSlice(language, (start, min(nxt - timedelta(seconds=1), end)), root.stars, root.size_kb)
        page, pages = 1, 1
        while page <= pages:
            answer = source._search_page(window, page)
            calls += 1
            items = answer.get("items") or []
            found.update(item["full_name"] for item in items)
            pages = math.ceil(min(int(answer["total_count"]), SEARCH_RESULT_CAP) / source.config.per_page)
            if len(items) < source.config.per_page:
                break
            page += 1
        start = nxt
    return found, calls


def run(args) -> dict:
    os.environ["GITHUB_TOKENS"] = TOKEN
    population = make_population(count=args.repos, burst=args.burst, seed=args.seed)
    clock = FakeClock()
    results = {}
    with FakeGithub(population, tokens={TOKEN: {"search": 10**9, "core": 10**9}}, clock=clock) as fake:
        config = GithubSourceConfig(api_url=fake.api_url, languages=[args.language])
        truth = {r.full_name for r in fake.matching(f"stars:>=1 size:<=10240 language:{args.language}")}

        def measure(name, enumerate_):
            source = GithubSource(config, clock=clock.time, sleep=clock.sleep)
            started = time.perf_counter()
            found, calls = enumerate_(source)
            seconds = time.perf_counter() - started
            results[name] = {
                "search_calls": calls, "found": len(found & truth), "missed": len(truth - found),
                "minutes_of_one_token": round(calls / SEARCH_CALLS_PER_MINUTE, 1), "wall_s": round(seconds, 2)}
            print(f"{name:>22}: {calls:6d} calls, {len(found & truth):6d}/{len(truth)} found, "
                  f"{calls / SEARCH_CALLS_PER_MINUTE:7.1f} min of one token, {seconds:5.1f} s here")

        def adaptive(source):
            found = {ref.full_name for ref in source.list_repos()}
            return found, source.stats["search_calls"]

        measure("codemill adaptive", adaptive)
        measure("fixed monthly windows", lambda s: fixed_windows(s, args.language, "month"))
        if not args.smoke:  # the same code as monthly windows, with 30 times the calls
            measure("fixed daily windows", lambda s: fixed_windows(s, args.language, "day"))
    return {"population": len(population), "language": args.language, "matching": len(truth),
            "created_range": f"{config.created_from}..{datetime.fromtimestamp(clock.time(), timezone.utc).date()}",
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "results": results, "smoke": args.smoke}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=30_000, help="repositories spread over 2008-2024")
    parser.add_argument("--burst", type=int, default=1_500, help="extra Python repositories created on one day")
    parser.add_argument("--language", default="Python")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="2,000 repositories, no daily windows")
    args = parser.parse_args()
    if args.smoke:
        args.repos, args.burst = 2_000, 100
    report = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
