"""The crawl stage on Ray: `codemill crawl --config crawl.yaml --out URI` (or `python -m codemill.crawl`).

The driver enumerates candidate repositories (metadata only), drops those the selection rules or the
exclusion list refuse, skips those a previous run finished, and spreads the rest over the cluster as Ray
tasks, a bounded number in flight. Each task crawls one repository (`crawl_repo`). API calls of all tasks
share one rate limiter, hosted in a Ray actor.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pyarrow.compute as pc

from codemill import storage
from codemill.crawl.config import CrawlConfig
from codemill.crawl.repo import RepoResult, crawl_repo, repo_key, skipped_table
from codemill.crawl.schema import REPOS_SCHEMA, SKIPPED_SCHEMA
from codemill.crawl.selection import load_exclusions, rejection_reason
from codemill.crawl.sources import make_source
from codemill.crawl.sources.ratelimit import Grant, RateHeaders, RateLimiter
from codemill.raysupport import ensure_ray
from codemill.runner import StageRun
from codemill.stages import CRAWL_REPOS, CRAWL_SKIPPED, STATS_FILE

log = logging.getLogger("codemill.crawl")

PROGRESS_EVERY_S = 10.0


class SharedRateLimiter:
    """A `Limiter` whose budgets live in one Ray actor, so every task draws on the same API budget."""

    def __init__(self, actor):
        self.actor = actor

    def acquire(self, resource: str) -> Grant:
        import ray
        return ray.get(self.actor.acquire.remote(resource))

    def update(self, token: int, resource: str, headers: RateHeaders | None) -> None:
        self.actor.update.remote(token, resource, headers)

    def block(self, token: int, resource: str, seconds: float) -> None:
        import ray
        ray.get(self.actor.block.remote(token, resource, seconds))


def _crawl_task(ref_dict: dict, config_json: dict, out: str, limiter) -> RepoResult:
    from codemill.crawl.sources.base import RepoRef

    cfg = CrawlConfig.model_validate(config_json)
    source = make_source(cfg.source, limiter=limiter)
    result = crawl_repo(RepoRef(**ref_dict), source, cfg.selection, cfg.extract, out)
    _publish_metrics(result)
    return result


def _publish_metrics(result: RepoResult) -> None:
    """Counters that the Ray dashboard's metrics view (Prometheus) shows while the crawl runs."""
    from ray.util.metrics import Counter as RayCounter

    RayCounter("codemill_crawl_repos", "repositories crawled", tag_keys=("status",)).inc(
        1, tags={"status": "failed" if result.failed else ("selected" if result.selected else "rejected")})
    if result.n_files:  # Ray's counters refuse increments of zero
        RayCounter("codemill_crawl_files", "files kept by the crawl").inc(result.n_files)
        RayCounter("codemill_crawl_bytes", "bytes of files kept by the crawl").inc(result.n_bytes)


def done_keys(out: str) -> set[str]:
    return {f.rsplit("/", 1)[-1].removesuffix(".parquet")
            for f in storage.list_files(storage.join(out, CRAWL_REPOS), ".parquet")}


def body(run: StageRun) -> dict:
    cfg: CrawlConfig = run.config
    ray = ensure_ray()
    limiter = None
    if cfg.source.type == "github":
        token_count = make_source(cfg.source).token_count
        limiter = SharedRateLimiter(ray.remote(num_cpus=0)(RateLimiter).remote(token_count))
    source = make_source(cfg.source, limiter=limiter)
    excluded = load_exclusions(cfg.selection)
    finished = done_keys(run.out)

    refused: list[tuple[str, str, str]] = []
    todo, listed, resumed = [], 0, 0
    seen: set[str] = set()
    for ref in source.list_repos():
        listed += 1
        # Repository names are case-insensitive on GitHub; a second spelling is the same repository.
        reason = "duplicate_name" if ref.full_name.lower() in seen else rejection_reason(ref, cfg.selection, excluded)
        seen.add(ref.full_name.lower())
        if reason is not None:
            refused.append((ref.full_name, "", reason))
            continue
        if repo_key(ref.full_name) in finished:
            resumed += 1
            continue
        if cfg.max_repos is not None and len(todo) + resumed >= cfg.max_repos:
            break
        todo.append(ref)
    # Refusals are recomputed by every run, so one file holds them and each run replaces it.
    storage.write_table(skipped_table(refused), run.path(CRAWL_SKIPPED, "_selection.parquet"))
    log.info("crawl: %d repositories listed, %d refused by selection, %d already done, %d to fetch",
             listed, len(refused), resumed, len(todo))

    task = ray.remote(num_cpus=cfg.task_num_cpus, max_retries=cfg.task_max_retries)(_crawl_task)
    config_json = cfg.model_dump(mode="json")
    max_in_flight = cfg.max_in_flight or max(2, int(2 * ray.cluster_resources().get("CPU", 1)))
    pending, results = [], []
    queue = list(reversed(todo))
    started = last_log = time.time()
    files = nbytes = 0
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            pending.append(task.remote(queue.pop().to_dict(), config_json, run.out, limiter))
        ready, pending = ray.wait(pending, num_returns=1)
        for r in ray.get(ready):
            results.append(r)
            files += r.n_files
            nbytes += r.n_bytes
        if time.time() - last_log > PROGRESS_EVERY_S or not (queue or pending):
            elapsed = max(time.time() - started, 1e-9)
            log.info("crawl: %d/%d repositories, %d files (%.1f files/s, %.2f MB/s)", len(results), len(todo),
                     files, files / elapsed, nbytes / elapsed / 1e6)
            last_log = time.time()
    return summarize(run.out, listed, len(refused), resumed, results, getattr(source, "stats", None))


def summarize(out: str, listed: int, refused: int, resumed: int, results: list[RepoResult],
              source_stats: dict | None = None) -> dict:
    """Counts for the manifest and stats.json, read back from the output so resumed runs count everything."""
    repos = storage.read_table(storage.join(out, CRAWL_REPOS), schema=REPOS_SCHEMA)
    selected = repos.filter(pc.field("selected"))
    skipped = storage.read_table(storage.join(out, CRAWL_SKIPPED), columns=["reason"], schema=SKIPPED_SCHEMA)
    reasons = Counter(_reason_family(r) for r in skipped.column("reason").to_pylist())
    by_language = Counter(x or "unknown" for x in selected.column("main_language").to_pylist())
    stats = {
        "repos_listed": listed, "repos_refused_by_selection": refused, "repos_resumed": resumed,
        "repos_fetched_this_run": sum(not r.failed for r in results),
        "repos_failed_this_run": sum(r.failed for r in results),
        "repos_selected": selected.num_rows, "repos_rejected_after_fetch": repos.num_rows - selected.num_rows,
        "files": int(pc.sum(selected.column("n_files")).as_py() or 0),
        "skipped_by_reason": dict(reasons), "repos_by_main_language": dict(by_language),
        "source": dict(source_stats or {}),  # e.g. GitHub search calls, slices, unreachable results
    }
    storage.write_json(storage.join(out, STATS_FILE), stats)
    failed = [r for r in results if r.failed]
    if failed:
        log.warning("crawl: %d repositories could not be fetched (see skipped/; rerun to retry them): %s",
                    len(failed), ", ".join(r.full_name for r in failed[:10]))
    return {k: v for k, v in stats.items() if not isinstance(v, dict)}


def _reason_family(reason: str) -> str:
    """`fetch: HTTP 404 ...` -> `fetch`, so stats group reasons, while skipped/ keeps the full text."""
    return reason.split(":", 1)[0]
