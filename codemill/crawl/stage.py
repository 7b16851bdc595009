"""The crawl stage on Ray: `codemill crawl --config crawl.yaml --out URI` (or `python -m codemill.crawl`).

The driver enumerates candidate repositories (metadata only) and plans the run (`codemill.crawl.plan`):
refused by selection, kept (finished by an earlier run under the same settings), or to fetch. It removes
what earlier runs left for repositories this run does not keep, then spreads the fetches over the
cluster as Ray tasks, a bounded number in flight, each with a memory request and a time limit. Each task
crawls one repository (`crawl_repo`); a task that dies or runs over its time is recorded as that
repository's failure and the crawl goes on. API calls of all tasks share one rate limiter, hosted in a
Ray actor. Failed repositories are listed in stats.json and counted in `repos_failed`; a rerun retries
only them.
"""

from __future__ import annotations

import logging
import time

from codemill import storage
from codemill.crawl import outputs
from codemill.crawl import stats as crawl_stats
from codemill.crawl.config import CrawlConfig
from codemill.crawl.plan import Plan, plan_crawl
from codemill.crawl.repo import RepoResult, crawl_repo, record_failure, skipped_table
from codemill.crawl.selection import load_exclusions
from codemill.crawl.sources import make_source
from codemill.crawl.sources.base import RepoRef
from codemill.crawl.sources.ratelimit import Grant, RateHeaders, RateLimiter
from codemill.raysupport import ensure_ray
from codemill.runner import StageRun
from codemill.secrets import redact_url
from codemill.stages import CRAWL_SKIPPED

log = logging.getLogger("codemill.crawl")

PROGRESS_EVERY_S = 10.0
WAIT_SLICE_S = 5.0  # how often the driver looks for tasks past their time limit
CANCEL_WAIT_S = 30.0  # how long a cancelled task's worker may take to die


class SharedRateLimiter:
    """A `Limiter` whose budgets live in one Ray actor, so every task draws on the same API budget."""

    def __init__(self, actor):
        self.actor = actor

    def acquire(self, resource: str) -> Grant:
        import ray
        return ray.get(self.actor.acquire.remote(resource))

    def update(self, token: int, resource: str, headers: RateHeaders | None) -> None:
        import ray
        # Awaited, not fired and forgotten: a task's next acquire (or another task's) must see what this
        # response said, or a spent token is handed out again and refused (403).
        ray.get(self.actor.update.remote(token, resource, headers))

    def block(self, token: int, resource: str, seconds: float) -> None:
        import ray
        ray.get(self.actor.block.remote(token, resource, seconds))


def _crawl_task(ref_dict: dict, cfg: CrawlConfig, out: str, limiter, config_hash: str) -> RepoResult:
    source = make_source(cfg.source, limiter=limiter)
    result = crawl_repo(RepoRef(**ref_dict), source, cfg.selection, cfg.extract, out, config_hash)
    _publish_metrics(result)
    return result


def _publish_metrics(result: RepoResult) -> None:
    """Counters that the Ray dashboard's metrics view (Prometheus) shows while the crawl runs."""
    from ray.util.metrics import Counter as RayCounter

    RayCounter("codemill_crawl_repos", "repositories crawled", tag_keys=("status",)).inc(
        1, tags={"status": "failed" if result.failed else ("selected" if result.selected else "rejected")})
    # Ray's counters refuse increments of zero (a repository of empty files keeps files but no bytes).
    if result.n_files:
        RayCounter("codemill_crawl_files", "files kept by the crawl").inc(result.n_files)
    if result.n_bytes:
        RayCounter("codemill_crawl_bytes", "bytes of files kept by the crawl").inc(result.n_bytes)


def prepare_output(out: str, plan: Plan) -> None:
    """Before any fetch: remove what earlier runs left for repositories this run does not keep (refused
    now, past max_repos, no longer listed), record this run's refusals and listing failures."""
    existing = set().union(*(outputs.part_keys(out, part) for part in outputs.PARTS))
    orphans = plan.orphan_keys(existing)
    for key in sorted(orphans):
        outputs.remove_parts(out, key)
    if orphans:
        log.info("crawl: removed the outputs of %d repositories this run does not keep", len(orphans))
    # Refusals are recomputed by every run, so one file holds them and each run replaces it.
    storage.write_table(skipped_table(plan.refused), storage.join(out, CRAWL_SKIPPED, outputs.SELECTION_PART))
    for ref, reason in plan.list_failures:
        record_failure(out, ref.full_name, reason)


def body(run: StageRun) -> dict:
    cfg: CrawlConfig = run.config
    ray = ensure_ray()
    limiter = None
    if cfg.source.type == "github":
        token_count = make_source(cfg.source).token_count
        limiter = SharedRateLimiter(ray.remote(num_cpus=0)(RateLimiter).remote(token_count))
    source = make_source(cfg.source, limiter=limiter)
    with run.phase("plan"):
        plan = plan_crawl(source.list_repos(), cfg, load_exclusions(cfg.selection), outputs.read_markers(run.out))
        prepare_output(run.out, plan)
    log.info("crawl: %d repositories listed, %d refused by selection, %d already done under these settings, "
             "%d to fetch%s", plan.listed, len(plan.refused), len(plan.resumed), len(plan.todo),
             " (listing stopped at max_repos)" if plan.stopped_at_max_repos else "")
    with run.phase("fetch"):
        results = _run_tasks(ray, cfg, run.out, limiter, plan.todo)
    failures = {ref.full_name: redact_url(reason) for ref, reason in plan.list_failures}
    failures.update({r.full_name: r.reason or "" for r in results if r.failed})
    stats = crawl_stats.summarize(run.out, plan, sum(not r.failed for r in results), failures,
                                  getattr(source, "stats", None))
    run.write_stats(stats)
    problems = crawl_stats.check_counts(stats)
    if problems:  # a bug, not bad input: the output would be described wrongly
        raise RuntimeError(f"crawl: the counts do not add up: {'; '.join(problems)}")
    if failures:
        log.warning("crawl: %d repositories failed (listed in stats.json; a rerun retries them): %s",
                    len(failures), ", ".join(sorted(failures)[:10]))
    return crawl_stats.counts(stats)


def _run_tasks(ray, cfg: CrawlConfig, out: str, limiter, todo: list[tuple[RepoRef, str]]) -> list[RepoResult]:
    """One task per repository, at most `max_in_flight` at once; a task that raises, dies or runs past
    `task_timeout_s` (counted from its submission) becomes its repository's recorded failure."""
    task = ray.remote(num_cpus=cfg.task_num_cpus, memory=cfg.task_memory_mb * 1024 * 1024,
                      max_retries=cfg.task_max_retries)(_crawl_task)
    max_in_flight = cfg.max_in_flight or max(2, int(2 * ray.cluster_resources().get("CPU", 1)))
    pending: dict = {}  # ObjectRef -> (ref, submitted at)
    results: list[RepoResult] = []
    queue = list(reversed(todo))
    started = last_log = time.time()
    files = nbytes = 0
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            ref, config_hash = queue.pop()
            pending[task.remote(ref.to_dict(), cfg, out, limiter, config_hash)] = (ref, time.time())
        soonest = min(t for _, t in pending.values()) + cfg.task_timeout_s
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, min(WAIT_SLICE_S, soonest - time.time())))
        for obj in ready:
            ref, _ = pending.pop(obj)
            try:
                result = ray.get(obj)
            except ray.exceptions.RayError as exc:  # the worker died, ran out of memory, or the task raised
                result = record_failure(out, ref.full_name, f"task: {type(exc).__name__}: {str(exc)[:500]}")
            results.append(result)
            files += result.n_files
            nbytes += result.n_bytes
        now = time.time()
        for obj, (ref, submitted) in list(pending.items()):
            if now - submitted > cfg.task_timeout_s:
                del pending[obj]
                results.append(_cancel(ray, obj, out, ref, cfg.task_timeout_s))
        if time.time() - last_log > PROGRESS_EVERY_S or not (queue or pending):
            elapsed = max(time.time() - started, 1e-9)
            log.info("crawl: %d/%d repositories, %d files (%.1f files/s, %.2f MB/s)", len(results), len(todo),
                     files, files / elapsed, nbytes / elapsed / 1e6)
            last_log = time.time()
    return results


def _cancel(ray, obj, out: str, ref: RepoRef, timeout_s: float) -> RepoResult:
    """Kill a task past its time limit and wait for it to end, so that it cannot write its repository's
    outputs after its failure is recorded; a task that finished meanwhile keeps its result."""
    ray.cancel(obj, force=True)
    ready, _ = ray.wait([obj], timeout=CANCEL_WAIT_S)
    if ready:
        try:
            return ray.get(obj)
        except ray.exceptions.RayError:  # cancelled, as intended
            pass
    return record_failure(out, ref.full_name, f"timeout: not done {timeout_s:g} s after it was submitted")
