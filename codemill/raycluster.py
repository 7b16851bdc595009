"""A local Ray head for the DAG runner and the tests: started with its dashboard and token auth on,
on free ports, in its own temp dir and process group, so it can be stopped without touching any other
Ray on the machine (`ray stop` would kill them all).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HEAD_START_TIMEOUT_S = 120
# Ray Train's controller polls its workers every 2 s by default (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S), and a run
# waits on those polls at its start, at checkpoint reports and at its end: about 6 s of a short run on one
# machine. A local head has few workers, so a poll costs nothing; a value set by the user is kept.
LOCAL_HEAD_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth_env(token_path: str | Path) -> dict[str, str]:
    """The environment that lets a client (job submission, ray.init) talk to a token-auth cluster."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def ensure_token_file(path: Path) -> None:
    """A token file readable by its owner only: created 0600 atomically (never briefly world-readable), an
    existing one tightened, its folder 0700 when codemill creates it or it is ~/.ray."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    elif path.parent == Path.home() / ".ray":
        path.parent.chmod(0o700)
    if path.exists() and path.read_text().strip():
        path.chmod(0o600)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.replace(tmp, path)


@dataclass
class LocalRayHead:
    num_cpus: int | None = None
    host: str = "127.0.0.1"
    root: Path | None = None
    token_file: Path | None = None  # default: a fresh token in the head's temp dir
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    # Ray's agents default to fixed ports (52365 and others): a second head on the machine would find them
    # taken and run without a job agent ("No available agent to submit job"). Every port is a free one.
    agent_ports: dict[str, int] = field(default_factory=lambda: {
        name: free_port() for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                       "runtime-env-agent-port", "metrics-export-port")})
    # The head stops when this process dies, however it dies: a watchdog (codemill.head_reaper) stops all its
    # processes within seconds, and the head gets SIGTERM from the kernel (PR_SET_PDEATHSIG) as well.
    die_with_parent: bool = False
    process: subprocess.Popen | None = None
    reaper: subprocess.Popen | None = None
    _reaper_pipe: int | None = None  # the write end: closed by this process's death (or by stop())

    @property
    def address(self) -> str:
        return f"{self.host}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    @property
    def token_path(self) -> Path:
        assert self.root is not None
        return Path(self.token_file) if self.token_file else self.root / "auth_token"

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers that authenticate to this head's dashboard and job API."""
        return {"Authorization": f"Bearer {self.token_path.read_text().strip()}"}

    def env(self) -> dict[str, str]:
        """Variables a client process needs to use this cluster."""
        return {**auth_env(self.token_path), "RAY_ADDRESS": self.address}

    def start(self) -> LocalRayHead:
        # Ray's socket paths must stay short (AF_UNIX limit), so the temp dir lives under /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="cm-ray-", dir="/tmp"))
        ensure_token_file(self.token_path)
        ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        if ray_bin is None:
            raise RuntimeError("the `ray` command is not installed in this environment (pip install 'ray[default]')")
        cmd = [ray_bin, "start", "--head", "--block", "--disable-usage-stats",
               f"--node-ip-address={self.host}", f"--port={self.gcs_port}",
               "--include-dashboard=true", f"--dashboard-host={self.host}",
               f"--dashboard-port={self.dashboard_port}", f"--temp-dir={self.root / 't'}",
               *(f"--{name}={port}" for name, port in self.agent_ports.items())]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        env = {**LOCAL_HEAD_ENV, **os.environ, **auth_env(self.token_path),
               # Jobs run `python -m codemill...`: make that the python of this environment.
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        env.pop("RAY_ADDRESS", None)
        log = open(self.root / "head.log", "wb")
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_term_on_parent_death if self.die_with_parent else None)
        if self.die_with_parent:
            self._start_reaper(log)
        self._wait_ready()
        return self

    def _start_reaper(self, log) -> None:
        read_end, self._reaper_pipe = os.pipe()  # both non-inheritable: only the reaper gets the read end
        try:
            self.reaper = subprocess.Popen(
                [sys.executable, "-m", "codemill.head_reaper", str(read_end), str(self.process.pid), str(self.root)],
                pass_fds=(read_end,), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # out of the terminal's process group: Ctrl-C goes to the runner only
        finally:
            os.close(read_end)

    def record(self) -> dict:
        """What another process needs to find this head and stop it (`stop_recorded`)."""
        return {"host": socket.gethostname(), "owner_pid": os.getpid(), "head_pid": self.process.pid,
                "root": str(self.root), "dashboard_url": self.dashboard_url, "address": self.address,
                "token_path": str(self.token_path)}

    def _wait_ready(self) -> None:
        deadline = time.time() + HEAD_START_TIMEOUT_S
        request = urllib.request.Request(f"{self.dashboard_url}/api/version",
                                         headers={"Authorization": f"Bearer {self.token_path.read_text()}"})
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray head exited with {self.process.returncode}; see {self.root / 'head.log'}:\n"
                                   + (self.root / "head.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(request, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ray head did not answer at {self.dashboard_url} within {HEAD_START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process is None:
            return
        session_id = self.process.pid
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._kill_leftovers(session_id)
        self.process = None
        self._stop_reaper()

    def _stop_reaper(self) -> None:
        """Closing the pipe wakes the reaper, which finds the head gone and exits."""
        if self._reaper_pipe is not None:
            os.close(self._reaper_pipe)
            self._reaper_pipe = None
        if self.reaper is not None:
            try:
                self.reaper.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.reaper.kill()
            self.reaper = None

    def _kill_leftovers(self, session_id: int) -> None:
        kill_session(session_id, str(self.root))

    def __enter__(self) -> LocalRayHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _term_on_parent_death() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux's PR_SET_PDEATHSIG); Ray's `start
    --block` then shuts its head down, so a head never outlives the run that started it."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop_recorded(record: dict) -> bool:
    """Stop a head from its `record()` (another process started it); True if one was running."""
    if record.get("host") != socket.gethostname():
        return False
    pid = int(record["head_pid"])
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        kill_session(pid, record.get("root", ""))
        return False
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.3)
    kill_session(pid, record.get("root", ""))
    return True


def session_processes(session_id: int, marker: str) -> list[int]:
    """Live processes of a head: those of its session, or carrying its temp dir in argv (zombies, which are
    dead already and wait only for their parent, are left out, and so is the calling process: the head's
    reaper names the temp dir in its own argv)."""
    found = []
    me = os.getpid()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
            continue
        try:
            fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
            state, sid = fields[0], int(fields[3])
            if state == "Z":
                continue
            cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
            if sid == session_id or (marker and marker in cmdline):
                found.append(int(pid_dir.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_session(session_id: int, marker: str) -> None:
    """SIGKILL what is left of a head: processes of its session, or carrying its temp dir in argv."""
    for pid in session_processes(session_id, marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
