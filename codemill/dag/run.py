"""Running a planned DAG: stages whose inputs are done run in parallel, each as a Ray job; each is decided
at its turn (skip if complete); failed jobs are retried with backoff; the run's state is kept in
`_dag/run.json`; one run per output at a time (a lease); Ctrl-C or SIGTERM stops the running jobs; a local
head started for the run never outlives it (unless asked to stay)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import yaml

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError
from codemill.dag import state as st
from codemill.dag.jobs import JobRunner, StageFailed
from codemill.dag.plan import DAG_STATE_DIR, PlannedStage, decide, plan
from codemill.dag.spec import MAX_RETRIES, load_dag
from codemill.lease import Lease
from codemill.retry import Backoff, retry

log = logging.getLogger("codemill.dag")

HEAD_FILE = "head.json"


@dataclass
class Selection:
    """Which stages of the plan this run may run: --only, --from, --until, --force."""

    only: list[str] | None = None
    start: str | None = None
    until: str | None = None
    force: list[str] | None = None

    def apply(self, planned: list[PlannedStage], dag_path: str) -> list[PlannedStage]:
        names = [p.name for p in planned]
        for option, given in (("--only", self.only), ("--force", self.force),
                              ("--from", [self.start] if self.start else None),
                              ("--until", [self.until] if self.until else None)):
            unknown = sorted(set(given or []) - set(names))
            if unknown:
                raise ConfigError(f"{option} {unknown}: not stages of {dag_path} ({', '.join(names)})")
        chosen = planned
        if self.start:
            below = _downstream(planned, self.start)
            chosen = [p for p in chosen if p.name in below]
        if self.until:
            above = _upstream(planned, self.until)
            chosen = [p for p in chosen if p.name in above]
        if self.only:
            chosen = [p for p in chosen if p.name in self.only]
        return chosen


def _downstream(planned: list[PlannedStage], name: str) -> set[str]:
    found = {name}
    for p in planned:  # plan order is topological: one pass finds every descendant
        if set(p.spec.inputs.values()) & found:
            found.add(p.name)
    return found


def _upstream(planned: list[PlannedStage], name: str) -> set[str]:
    by_name = {p.name: p for p in planned}
    found, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(by_name[current].spec.inputs.values())
    return found


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While running, SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C, so running jobs are stopped and
    a local head is shut down; the previous handler comes back afterwards."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_token_file() -> Path:
    """The token of the local head: the user's own Ray token file if they have one, else ~/.ray/auth_token."""
    env_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(env_path) if env_path else Path.home() / ".ray" / "auth_token"


def head_file(out: str) -> str:
    return storage.join(out, DAG_STATE_DIR, HEAD_FILE)


def reap_orphan_head(out: str) -> None:
    """A local head left by a run that died without stopping it (SIGKILL, the OOM killer) is stopped."""
    from codemill.lease import holder_is_alive
    from codemill.raycluster import stop_recorded

    uri = head_file(out)
    if not storage.exists(uri):
        return
    with contextlib.suppress(ValueError, KeyError, OSError):
        record = storage.read_json(uri)
        owner = {"host": record["host"], "pid": record["owner_pid"], "heartbeat": time.time()}
        if record.get("kept"):
            return  # left up on purpose (--keep-head); `codemill dag stop-head` stops it
        if not holder_is_alive(owner) and stop_recorded(record):
            log.warning("stopped the local Ray head (pid %s) that a killed run of %s left behind",
                        record["head_pid"], out)
    storage.delete_file(uri)


class Cluster:
    """Where jobs go: `address`, or a local head started on first use (a run with nothing to do starts none),
    which stops with the run however it ends, unless `keep_head`."""

    def __init__(self, out: str, address: str | None, num_cpus: int | None, keep_head: bool, run_id: str):
        self.out, self.address, self.num_cpus, self.keep_head = out, address, num_cpus, keep_head
        self.run_id = run_id
        self.head = None
        self._runner: JobRunner | None = None
        self._lock = threading.Lock()

    def runner(self) -> JobRunner:
        with self._lock:
            if self._runner is None:
                url, headers = (self.address, {}) if self.address else self._start_head()
                self._runner = JobRunner(url, headers, self.run_id)
            return self._runner

    def stop_jobs(self) -> list[str]:
        """Stop the jobs still running (the run was interrupted); their stage names."""
        return self._runner.stop_all() if self._runner else []

    @property
    def dashboard_url(self) -> str | None:
        return self._runner.dashboard_url if self._runner else self.address

    def _start_head(self) -> tuple[str, dict[str, str]]:
        from codemill.raycluster import LocalRayHead

        reap_orphan_head(self.out)
        head = LocalRayHead(num_cpus=self.num_cpus, token_file=default_token_file(),
                            die_with_parent=not self.keep_head)
        log.info("starting a local Ray head (dashboard and token auth on)")
        head.start()
        self.head = head
        storage.write_json(head_file(self.out), {**head.record(), "kept": self.keep_head})
        log.info("Ray dashboard: %s (token in %s)", head.dashboard_url, head.token_path)
        return head.dashboard_url, head.auth_headers()

    def close(self) -> None:
        if self.head is None:
            return
        if self.keep_head:
            h = self.head
            print(f"\nThe local Ray head stays up: dashboard {h.dashboard_url}\n"
                  f"  log in with the token in {h.token_path} (the dashboard asks for it)\n"
                  f"  ray job list --address {h.dashboard_url}   (with RAY_AUTH_MODE=token "
                  f"RAY_AUTH_TOKEN_PATH={h.token_path})\n"
                  f"  stop it with: codemill dag stop-head {self.out}", flush=True)
            return
        self.head.stop()
        storage.delete_file(head_file(self.out))


def stop_head(out: str) -> bool:
    """`codemill dag stop-head OUT`: stop the head a `--keep-head` run left up."""
    from codemill.raycluster import stop_recorded

    uri = head_file(out)
    if not storage.exists(uri):
        return False
    stopped = stop_recorded(storage.read_json(uri))
    storage.delete_file(uri)
    return stopped


def run_dag(dag_path: str, out: str, address: str | None = None, only: list[str] | None = None,
            overrides: dict[str, list[str]] | None = None, num_cpus: int | None = None,
            force: list[str] | None = None, start: str | None = None, until: str | None = None,
            keep_head: bool = False) -> list[str]:
    """Run the DAG; returns the names of the stages that ran, in the order they finished."""
    dag_file = Path(dag_path)
    out = storage.absolute(out)
    dag = load_dag(dag_file)
    planned = plan(dag, dag_file, out, overrides)
    chosen = Selection(only, start, until, force).apply(planned, dag_path)
    for ps in planned:
        storage.write_bytes(ps.config_uri, yaml.safe_dump(ps.config.model_dump(mode="json"), sort_keys=False).encode())
    with Lease(storage.join(out, DAG_STATE_DIR), f"dag run of {dag_file.name}"), sigterm_as_exit():
        state = st.RunState(out, dag.name, [p.name for p in chosen])
        log.info("run %s%s: %s", state.run_id, " (resumed)" if state.data["resumed"] else "",
                 ", ".join(p.name for p in chosen))
        where = Cluster(out, address, num_cpus, keep_head, state.run_id)
        try:
            ran = Scheduler(chosen, dag.name, set(force or []), state, where).run()
            state.update(status=st.SUCCEEDED, ended=time.time())
            return ran
        except BaseException as exc:
            state.update(status=st.STOPPED if isinstance(exc, (KeyboardInterrupt, SystemExit)) else st.FAILED,
                         ended=time.time())
            raise
        finally:
            where.close()
            state.update(dashboard=where.dashboard_url)
            print(st.format_table(state.data, _counts(out, chosen)), flush=True)


def _counts(out: str, planned: list[PlannedStage]) -> dict[str, dict]:
    result = {}
    for ps in planned:
        manifest = mf.read_manifest(ps.out)
        if manifest is not None:
            result[ps.name] = manifest.counts
    return result


class Scheduler:
    """Starts every stage whose inputs are done, as many at once as are ready; stops starting new ones after
    a failure, and stops the running jobs when interrupted."""

    def __init__(self, planned: list[PlannedStage], dag_name: str, forced: set[str], state: st.RunState,
                 where: Cluster):
        self.planned, self.dag_name, self.forced, self.state, self.where = planned, dag_name, forced, state, where
        self.chosen = {p.name for p in planned}

    def _ready(self, ps: PlannedStage, done: set[str]) -> bool:
        return all(up in done or up not in self.chosen for up in ps.spec.inputs.values())

    def run(self) -> list[str]:
        done: set[str] = set()
        ran: list[str] = []
        failures: list[BaseException] = []
        remaining = list(self.planned)
        futures: dict[Future, PlannedStage] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(self.planned)), thread_name_prefix="stage") as pool:
            try:
                while remaining or futures:
                    started_any = False
                    for ps in [p for p in remaining if not failures and self._ready(p, done)]:
                        remaining.remove(ps)
                        must_run, why = decide(ps, ps.name in self.forced)
                        if not must_run:
                            log.info("stage %s: skipped (%s)", ps.name, why)
                            self.state.update(ps.name, status=st.SKIPPED, why=why)
                            done.add(ps.name)
                            started_any = True
                            continue
                        log.info("stage %s: runs (%s)", ps.name, why)
                        self.state.update(ps.name, why=why)
                        futures[pool.submit(self._run_stage, ps)] = ps
                        started_any = True
                    if started_any:
                        continue
                    if not futures:
                        break  # nothing running and nothing ready: only stages below a failure are left
                    finished, _ = wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
                    for future in finished:
                        ps = futures.pop(future)
                        try:
                            future.result()
                        except Exception as exc:
                            failures.append(exc)
                            continue
                        done.add(ps.name)
                        ran.append(ps.name)
            except BaseException:
                stopped = self.where.stop_jobs()
                for name in stopped:
                    self.state.update(name, status=st.STOPPED, end=time.time())
                raise
        if failures:
            not_run = [p.name for p in remaining]
            raise StageFailed("\n".join(str(f) for f in failures)
                              + (f"\nnot run (below the failure): {', '.join(not_run)}" if not_run else ""))
        return ran

    def _run_stage(self, ps: PlannedStage) -> None:
        """Run the stage's job; a job that ends FAILED is submitted again, `retries` times at most, after a
        jittered backoff that doubles from `retry_backoff_s`. A stopped job is not retried."""
        runner = self.where.runner()
        spec = ps.spec
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            self.state.update(ps.name, status=st.RUNNING, attempt=attempts, start=time.time(), end=None)
            job_id = runner.submit(ps, self.dag_name, attempts, ps.name in self.forced)
            self.state.update(ps.name, job_id=job_id)
            status = runner.follow(ps, job_id)
            if status in ("SUCCEEDED", "RUNNING"):
                self.state.update(ps.name, status=st.SERVING if status == "RUNNING" else st.SUCCEEDED,
                                  end=time.time())
                log.info("stage %s: done in %.1f s", ps.name, time.time() - self.state.stage(ps.name)["start"])
                return
            self.state.update(ps.name, status=st.STOPPED if status == "STOPPED" else st.FAILED, end=time.time())
            raise runner.failure(ps, job_id, status)

        def failed_job(exc: BaseException) -> str | None:
            if isinstance(exc, StageFailed) and exc.status not in (None, "STOPPED"):
                return f"attempt {attempts} ended {exc.status}"
            return None

        retry(attempt, what=f"stage {ps.name}", retry_on=failed_job, attempts=spec.retries + 1,
              backoff=Backoff(base_s=spec.retry_backoff_s, max_s=spec.retry_backoff_s * 2 ** MAX_RETRIES), logger=log)
