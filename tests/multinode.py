"""A Ray cluster of two nodes on this machine, for the multi-node tests.

Tests run in a loopback-only network namespace (scripts/in-netns.sh), where all of 127.0.0.0/8 routes to `lo`:
the head is a `LocalRayHead` on 127.0.0.1 and the worker node a second raylet (`ray start --address ...
--block`) on 127.0.0.2, with its own node id, temp dir and free ports for every agent, in its own process
group, so that SIGKILL of that group is the failure of that node alone and the node can be started again.
S3 (the moto server of conftest's `s3_server`) is the storage both nodes share.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from codemill.raycluster import LOCAL_HEAD_ENV, LocalRayHead, auth_env, free_port, kill_session

HEAD_IP = "127.0.0.1"
WORKER_IP = "127.0.0.2"
NODE_START_TIMEOUT_S = 180
# A raylet that dies is found by the GCS's health checks: a refused check every second, 5 in a row, marks it
# dead in about 5 s (Ray's default: every 3 s). A slow but live node still has 10 s to answer each check.
HEAD_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5",
            "RAY_health_check_timeout_ms": "10000"}
AGENT_PORT_FLAGS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                    "metrics-export-port", "node-manager-port", "object-manager-port")


def venv_path() -> str:
    return os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


@dataclass
class WorkerNode:
    """A non-head node of the cluster: `ray start --block` in its own process group (and session)."""

    gcs_address: str
    token_path: Path
    ip: str = WORKER_IP
    num_cpus: int = 1
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cm-ray-w-", dir="/tmp")))
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> WorkerNode:
        assert self.process is None, "already running"
        ray_bin = shutil.which("ray", path=venv_path())
        assert ray_bin, "the `ray` command is not installed in this environment"
        self.starts += 1
        cmd = [ray_bin, "start", f"--address={self.gcs_address}", f"--node-ip-address={self.ip}",
               f"--num-cpus={self.num_cpus}", "--block", "--disable-usage-stats",
               f"--temp-dir={self.root / 't'}",
               # The head's workers take ports from Ray's default range (10002-19999): keep clear of it.
               "--min-worker-port=20002", "--max-worker-port=29999",
               *(f"--{flag}={free_port()}" for flag in AGENT_PORT_FLAGS)]
        # The node's processes need what a real node's launcher gives them: the cluster's token, the S3
        # endpoint and credentials (AWS_*, set by the s3_server fixture), and this environment's Python.
        env = {**LOCAL_HEAD_ENV, **os.environ, **auth_env(self.token_path), "PATH": venv_path()}
        env.pop("RAY_ADDRESS", None)
        log = open(self.root / f"node-{self.starts}.log", "wb")
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    @property
    def log_tail(self) -> str:
        return (self.root / f"node-{self.starts}.log").read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """The node fails: SIGKILL to every process of its group at once (raylet, agents, workers)."""
        assert self.process is not None
        sid = self.process.pid
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        # Processes that left the group (a worker that made its own) still carry the node's temp dir.
        kill_session(sid, str(self.root))
        self.process = None

    def stop(self) -> None:
        """An orderly shutdown (`ray start --block` stops its node on SIGTERM), then whatever is left."""
        if self.process is None:
            return
        sid = self.process.pid
        try:
            os.killpg(sid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(sid, signal.SIGKILL)
            self.process.wait(timeout=10)
        kill_session(sid, str(self.root))
        self.process = None


@dataclass
class TwoNodeCluster:
    head: LocalRayHead
    worker: WorkerNode

    @property
    def dashboard_url(self) -> str:
        return self.head.dashboard_url

    def alive_nodes(self) -> dict[str, str]:
        """node id -> IP of the nodes the GCS counts alive (the test process's driver must be connected)."""
        import ray

        return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}

    def node_id(self, ip: str) -> str:
        ids = [nid for nid, addr in self.alive_nodes().items() if addr == ip]
        assert len(ids) == 1, (ip, self.alive_nodes())
        return ids[0]

    def wait_nodes(self, ips: set[str], timeout_s: float = NODE_START_TIMEOUT_S) -> dict[str, str]:
        """Wait until exactly the nodes at `ips` are alive; returns IP -> node id."""
        deadline = time.time() + timeout_s
        while True:
            alive = self.alive_nodes()
            if sorted(alive.values()) == sorted(ips):
                return {ip: nid for nid, ip in alive.items()}
            if self.worker.process is not None and self.worker.process.poll() is not None:
                raise RuntimeError(f"the worker node exited with {self.worker.process.returncode}:\n"
                                   + self.worker.log_tail)
            if time.time() > deadline:
                raise TimeoutError(f"alive nodes {alive}, expected {ips} within {timeout_s} s; worker node log:\n"
                                   + self.worker.log_tail)
            time.sleep(0.5)

    def wait_both(self) -> dict[str, str]:
        return self.wait_nodes({HEAD_IP, self.worker.ip})

    def ensure_worker(self) -> dict[str, str]:
        """The worker node up (restarted if a test left it down); IP -> node id of both nodes."""
        if self.worker.process is None or self.worker.process.poll() is not None:
            self.worker.stop()  # a node that exited by itself: whatever it left behind goes too
            self.wait_nodes({HEAD_IP})
            self.worker.start()
        return self.wait_both()

    def fail_worker(self) -> str:
        """SIGKILL the worker node and wait until the GCS has marked it dead; returns its old node id."""
        old = self.node_id(self.worker.ip)
        self.worker.kill()
        self.wait_nodes({HEAD_IP}, timeout_s=120)
        return old


def session_processes(session_id: int) -> dict[int, str]:
    """pid -> command name of the processes of one session (a node started with `start_new_session`)."""
    found = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            stat = (pid_dir / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) == session_id:
                found[int(pid_dir.name)] = stat.split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, ValueError, IndexError):
            continue
    return found


def start_cluster(token_path: Path, cpus_per_node: int = 2) -> TwoNodeCluster:
    """Head (dashboard, token auth) and one worker node, `cpus_per_node` logical CPUs each; the caller stops
    it (`stop_cluster`). Two CPUs a node by default: one node could then hold both of a 2-worker training run,
    so only a spreading placement puts its workers on different nodes (and the test of it can fail)."""
    saved = {k: os.environ.get(k) for k in HEAD_ENV}
    os.environ.update(HEAD_ENV)
    try:
        head = LocalRayHead(num_cpus=cpus_per_node, host=HEAD_IP, token_file=token_path).start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    worker = WorkerNode(head.address, head.token_path, num_cpus=cpus_per_node)
    try:
        worker.start()
    except BaseException:
        head.stop()
        raise
    return TwoNodeCluster(head, worker)


def stop_cluster(cluster: TwoNodeCluster) -> None:
    try:
        cluster.worker.stop()
    finally:
        cluster.head.stop()
        shutil.rmtree(cluster.worker.root, ignore_errors=True)
