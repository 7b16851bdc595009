"""One stage as one Ray job: submitted through the job submission API (retrying while the head's job agent
starts or the network blips), its log followed and printed, and awaited to the end, or, for a long-running
stage (a service), until its output is complete while the job keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from codemill import manifest as mf
from codemill.dag.joblog import JobLogFilter
from codemill.dag.plan import PlannedStage, entrypoint
from codemill.metrics import RUN_ID_ENV, STANDALONE
from codemill.retry import Backoff, retry

log = logging.getLogger("codemill.dag")

JOB_POLL_S = 0.5
# How long an ended job's log stream may take to deliver its last lines before the log is read whole instead.
LOG_STREAM_GRACE_S = 0.5
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
SUBMIT_TIMEOUT_S = 120.0  # a fresh head's job agent can take this long to accept jobs
JOB_API_BACKOFF = Backoff(base_s=1.0, max_s=10.0)
# Passed from the runner's environment to every job: the S3 endpoint and region (never credentials) and the
# compiled-extension cache.
JOB_ENV_NAMES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "TORCH_EXTENSIONS_DIR")
_TRANSIENT = re.compile(r"No available agent|Connection refused|Cannot connect|ServerDisconnected|"
                        r"RemoteDisconnected|timed out|503|502|504", re.IGNORECASE)


class StageFailed(RuntimeError):
    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status  # the job's final status (FAILED, STOPPED), when a job ended


@dataclass
class JobRunner:
    """Runs stages as Ray jobs on one cluster; safe to use from several threads at once."""

    dashboard_url: str
    headers: dict[str, str] = field(default_factory=dict)
    run_id: str = STANDALONE  # labels the stages' metrics
    client: Any = field(init=False)
    running: dict[str, str] = field(default_factory=dict)  # stage name -> job id, while it runs
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        from ray.job_submission import JobSubmissionClient

        self.client = _retry(lambda: JobSubmissionClient(self.dashboard_url, headers=self.headers or None),
                             "connect to the job API")

    def submit(self, ps: PlannedStage, dag_name: str, attempt: int, force: bool = False) -> str:
        env = {"PYTHONUNBUFFERED": "1", RUN_ID_ENV: self.run_id, **ps.spec.env}
        env.update({k: os.environ[k] for k in JOB_ENV_NAMES if k in os.environ and k not in env})
        resources = ps.spec.spec.resources
        num_cpus = ps.spec.entrypoint_num_cpus
        submission_id = f"codemill-{dag_name}-{ps.name}-{ps.hash[:8]}-{int(time.time())}-{attempt}"
        job_id = _retry(lambda: self.client.submit_job(
            entrypoint=entrypoint(ps, force), submission_id=submission_id, runtime_env={"env_vars": env},
            entrypoint_num_cpus=resources.entrypoint_num_cpus if num_cpus is None else num_cpus,
            entrypoint_num_gpus=resources.entrypoint_num_gpus or None,
            metadata={"codemill_dag": dag_name, "codemill_stage": ps.name, "config_hash": ps.hash,
                      "attempt": str(attempt)}), f"submit stage {ps.name}")
        with self._lock:
            self.running[ps.name] = job_id
        log.info("stage %s: submitted as Ray job %s (%s/#/jobs/%s)", ps.name, job_id, self.dashboard_url, job_id)
        return job_id

    def follow(self, ps: PlannedStage, job_id: str) -> str:
        """Print the job's log until it ends; returns its final status (RUNNING for a service that is up)."""
        try:
            if ps.spec.spec.long_running:
                return self._until_serving(ps, job_id)
            return asyncio.run(self._follow(job_id, ps.name))
        finally:
            with self._lock:
                if self.running.get(ps.name) == job_id and not ps.spec.spec.long_running:
                    self.running.pop(ps.name)

    def failure(self, ps: PlannedStage, job_id: str, status: str) -> StageFailed:
        info = self.client.get_job_info(job_id)
        return StageFailed(f"stage {ps.name} ended {status}: {(info.message or '').strip()[-2000:]}\n"
                           f"logs: ray job logs {job_id} --address {self.dashboard_url}", status)

    def stop_all(self) -> list[str]:
        """Stop every job still running (the runner was interrupted); returns their stage names."""
        with self._lock:
            running = dict(self.running)
            self.running.clear()
        for stage, job_id in running.items():
            with contextlib.suppress(Exception):
                self.client.stop_job(job_id)
                log.warning("stage %s: stopped Ray job %s", stage, job_id)
        return list(running)

    async def _follow(self, job_id: str, stage: str) -> str:
        """Stream the job's log while polling its status. Ray's log stream closes seconds after the job ends
        (it re-reads the file until it has seen the end twice, a second apart), so the end is taken from the
        status; the log's remainder is then read whole, so no line is lost."""
        shown = JobLogFilter()
        printed = 0  # characters of the log fed to the filter

        def show(text: str) -> None:
            nonlocal printed
            printed += len(text)
            for line in shown.feed(text):
                print(f"[{stage}] {line}", flush=True)

        async def stream() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                show(chunk)

        streaming = asyncio.create_task(stream())
        closed_early = False
        while (status := await asyncio.to_thread(self._status, job_id)) not in TERMINAL:
            if streaming.done():  # the stream failed or closed early: keep polling at the same pace
                closed_early = True
                await asyncio.sleep(JOB_POLL_S)
            else:
                await asyncio.wait([streaming], timeout=JOB_POLL_S)
        if not streaming.done():
            await asyncio.wait([streaming], timeout=LOG_STREAM_GRACE_S)
        whole = (not closed_early and streaming.done() and not streaming.cancelled()
                 and streaming.exception() is None)
        if not whole:  # still open, failed, or closed before the job ended: the rest comes from the log read whole
            streaming.cancel()
            with contextlib.suppress(BaseException):
                await streaming
            rest = await asyncio.to_thread(_retry, lambda: self.client.get_job_logs(job_id), "read a job's log")
            if len(rest) > printed:
                show(rest[printed:])
        for line in shown.flush():
            print(f"[{stage}] {line}", flush=True)
        return status

    def _status(self, job_id: str) -> str:
        return _retry(lambda: self.client.get_job_status(job_id).value, "read a job's status")

    def _until_serving(self, ps: PlannedStage, job_id: str) -> str:
        """A service's job runs on; it is up once it has written its manifest (serving, or complete for a
        smoke check). A manifest from before this job (the last run's) does not count."""
        since = time.time() - MANIFEST_CLOCK_SLACK_S
        while True:
            status = self.client.get_job_status(job_id).value
            if status in TERMINAL:
                return status
            manifest = mf.read_manifest(ps.out)
            fresh = manifest is not None and (manifest.timings or {}).get("finished_at", 0) >= since
            if fresh and (mf.is_usable(manifest) or manifest.status == mf.STATUS_SERVING):
                log.info("stage %s: serving (Ray job %s keeps running)", ps.name, job_id)
                return "RUNNING"
            time.sleep(JOB_POLL_S)


# The job's manifest is stamped by the node that runs it: allow that clock to trail the driver's a little.
MANIFEST_CLOCK_SLACK_S = 5.0


def _transient(exc: BaseException) -> str | None:
    """Why a job API call may succeed later (the job agent of a head that just started, a dropped
    connection), or None: the SDK raises RuntimeError, ConnectionError and aiohttp errors alike."""
    text = f"{type(exc).__name__}: {exc}"
    return text if _TRANSIENT.search(text) else None


def _retry(call, what: str, timeout_s: float = SUBMIT_TIMEOUT_S):
    """`call()`, retried with backoff while the error looks transient, up to `timeout_s`."""
    return retry(call, what=what, retry_on=_transient, deadline_s=timeout_s, backoff=JOB_API_BACKOFF, logger=log)
