"""The crawl stage with the GitHub source, end to end: `ray job submit` to a real local head, a fake
GitHub on loopback, tasks sharing one rate limiter (an actor), token rotation, and resume after a kill."""

from __future__ import annotations

import json
import time
from pathlib import Path

from github_fake import FakeGithub, make_population

from codemill import manifest as mf
from codemill import storage

TOKEN_A, TOKEN_B = "ghp_STAGEaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1", "ghp_STAGEbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
LANGUAGE = "Go"


class RealClock:
    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def submit(ray_head, cfg: Path, out: Path, wait: bool = True):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head.dashboard_url)
    job = client.submit_job(
        entrypoint=f"python -m codemill.crawl --config {cfg} --out {out}",
        # Test tokens only: on a real cluster the nodes carry them (runtime env vars show in the dashboard).
        runtime_env={"env_vars": {"GITHUB_TOKENS": f"{TOKEN_A},{TOKEN_B}"}})
    if wait:
        deadline = time.time() + 600
        while client.get_job_status(job).value not in {"SUCCEEDED", "FAILED", "STOPPED"}:
            assert time.time() < deadline
            time.sleep(1)
    return client, job


def wait_until_stopped(client, job, out: Path, fake: FakeGithub, quiet_s: float = 3.0) -> None:
    """The job's terminal status, then no new marker and no new download for `quiet_s`: a stopped job's
    tasks are killed after its driver, so a snapshot taken at once could miss a task still finishing."""
    deadline = time.time() + 120
    while client.get_job_status(job).value not in {"SUCCEEDED", "FAILED", "STOPPED"}:
        assert time.time() < deadline, "the stopped job did not end"
        time.sleep(0.5)
    state, quiet_since = None, time.time()
    while time.time() - quiet_since < quiet_s:
        assert time.time() < deadline, "the stopped job's tasks kept writing"
        now = (len(list((out / "repos").glob("*.parquet"))), len(fake.recorded("codeload")))
        if now != state:
            state, quiet_since = now, time.time()
        time.sleep(0.3)


def write_config(tmp_path: Path, api_url: str, **extra) -> Path:
    cfg = {"source": {"type": "github", "api_url": api_url, "languages": [LANGUAGE], "backoff_base_s": 0.05},
           "max_in_flight": 2, "task_num_cpus": 0.5, **extra}
    path = tmp_path / "crawl.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def test_github_crawl_rotates_tokens_and_resumes(tmp_path, ray_head):
    population = make_population(count=400, burst=0, seed=11)
    # Token A may make few core calls: the crawl must move on to token B rather than stop or wait an hour.
    # The fake's rate-limit windows run on the real clock here, as the Ray workers' limiter does.
    with FakeGithub(population, tokens={TOKEN_A: {"core": 12}, TOKEN_B: None}, clock=RealClock()) as fake:
        expected = {r.full_name for r in fake.matching(f"language:{LANGUAGE} stars:>=1 size:<=10240")
                    if r.head is not None}
        assert len(expected) >= 20
        out = tmp_path / "out"
        cfg = write_config(tmp_path, fake.api_url)

        # First run: stop it once a few repositories are done.
        client, job = submit(ray_head, cfg, out, wait=False)
        deadline = time.time() + 600
        while len(storage.list_files(str(out / "repos"), ".parquet")) < 5:
            assert client.get_job_status(job).value not in {"FAILED", "STOPPED"}, client.get_job_logs(job)[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        client.stop_job(job)  # False when the job ended already: then the rerun resumes everything
        wait_until_stopped(client, job, out, fake)
        done_first = {p.stem for p in (out / "repos").glob("*.parquet")}
        tarballs_first = len(fake.recorded("codeload"))

        # Second run: fetches only what is missing.
        client, job2 = submit(ray_head, cfg, out)
        logs = client.get_job_logs(job2)
        assert client.get_job_status(job2).value == "SUCCEEDED", logs[-3000:]

        repos = storage.read_table(str(out / "repos"))
        assert sorted(repos.column("full_name").to_pylist()) == sorted(expected)
        heads = {r.full_name: r.head for r in population}
        assert all(heads[n] == c for n, c in zip(repos.column("full_name").to_pylist(), repos.column("commit").to_pylist()))
        files = storage.read_table(str(out / "files"))
        assert len(files.column("doc_id").unique()) == files.num_rows >= len(expected)
        counts = mf.read_manifest(str(out)).counts
        assert counts["repos_resumed"] >= len(done_first)
        assert len(fake.recorded("codeload")) - tarballs_first == len(expected) - counts["repos_resumed"]

        used = {r.token for r in fake.recorded("api") if r.path.startswith("/repos/")}
        assert used == {TOKEN_A, TOKEN_B}, "core calls must rotate to token B once A is spent"
        # A run's limiter learns that A is spent from a response (updates are awaited, so in order) or from a
        # 403: at most one per task in flight, per run, then it avoids A.
        assert sum(r.status == 403 for r in fake.recorded("api")) <= 2 * 2
        for secret in (TOKEN_A, TOKEN_B):
            assert secret not in logs
            for path in out.rglob("*"):
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), path
