"""One execution's memory and process limits for its whole process tree, through the kernel's control groups.

A cgroup's memory limit counts everything its processes make the kernel hold: their pages, the page cache they
fill and the tmpfs pages they write (the sandbox's /tmp and /dev/shm), so one execution can take at most its
limit from the host however many processes it starts. Its process limit counts processes and threads.

Where the host lets us (root, a writable cgroup filesystem with the memory and pids controllers):
- cgroup v2: a folder `codemill-eval` (or $CODEMILL_EVAL_CGROUP, a folder delegated to us) with the memory and
  pids controllers enabled for its children; one child per execution with `memory.max`, `memory.swap.max`
  = 0 and `pids.max`;
- cgroup v1 (hybrid hosts such as this project's CI machines): a `codemill-eval` folder in the memory and in
  the pids hierarchy; one child in each per execution with `memory.limit_in_bytes` (and the memory+swap
  limit) and `pids.max`.
Elsewhere (`probe()` says why) the sandbox falls back to per-process rlimits and size-limited tmpfs mounts,
which bound an execution less tightly (docs/eval.md, "Limits").

The first process of an execution writes its own pid into `procs_files` before it starts the sandbox, so
every process the execution ever has is born inside the cgroup.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PARENT_NAME = "codemill-eval"
PARENT_ENV = "CODEMILL_EVAL_CGROUP"    # a cgroup v2 folder delegated to codemill (its controllers enabled)
MOUNTINFO = "/proc/self/mountinfo"
REMOVE_WAIT_S = 5.0                    # how long a finished execution's cgroup may take to empty
KILL_WAIT_S = 5.0                      # how long killing what is left of an execution may take


class CgroupError(RuntimeError):
    """A cgroup could not be made, limited or removed."""


@dataclass(frozen=True)
class Backend:
    """Where execution cgroups are made: v2 has one parent folder; v1 one per controller hierarchy."""

    version: int
    memory_parent: Path
    pids_parent: Path

    @property
    def name(self) -> str:
        return f"cgroup-v{self.version}"


def _mounts(mountinfo: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) of every cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((fields[4], rfields[0], set(rfields[2].split(","))))
    return out


def find_backend(mountinfo: str | None = None, env: dict[str, str] | None = None) -> tuple[Backend | None, str]:
    """The cgroup hierarchy to use, and why none when there is none (read from the mount table)."""
    env = os.environ if env is None else env
    if mountinfo is None:
        try:
            mountinfo = Path(MOUNTINFO).read_text()
        except OSError as exc:
            return None, f"cannot read {MOUNTINFO} ({exc})"
    mounts = _mounts(mountinfo)
    v1 = {opt: Path(point) for point, fstype, opts in mounts if fstype == "cgroup"
          for opt in opts & {"memory", "pids"}}
    for point, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        root = Path(point)
        available = set(_read(root / "cgroup.controllers").split())
        if {"memory", "pids"} <= available:
            parent = Path(env[PARENT_ENV]) if env.get(PARENT_ENV) else root / PARENT_NAME
            return Backend(2, parent, parent), ""
    if {"memory", "pids"} <= set(v1):
        return Backend(1, v1["memory"] / PARENT_NAME, v1["pids"] / PARENT_NAME), ""
    return None, ("no cgroup hierarchy with the memory and pids controllers is mounted "
                  f"(found: {sorted({f'{t}:{p}' for p, t, _ in mounts}) or 'none'})")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def prepare(backend: Backend) -> None:
    """Make the parent folder(s) and, on v2, enable the memory and pids controllers for their children."""
    if backend.version == 2:
        parent = backend.memory_parent
        if not parent.is_dir():
            parent.mkdir()
        enabled = set(_read(parent.parent / "cgroup.subtree_control").split())
        if not {"memory", "pids"} <= enabled and os.environ.get(PARENT_ENV) is None:
            _write(parent.parent / "cgroup.subtree_control", "+memory +pids")
        if not {"memory", "pids"} <= set(_read(parent / "cgroup.subtree_control").split()):
            _write(parent / "cgroup.subtree_control", "+memory +pids")
    else:
        for parent in (backend.memory_parent, backend.pids_parent):
            parent.mkdir(exist_ok=True)
    remove_stale(backend)


def remove_stale(backend: Backend) -> None:
    """Remove the execution cgroups of processes that no longer exist (a killed worker's; their names start
    with the pid of the process that made them). A populated one cannot be removed, and is left."""
    for parent in {backend.memory_parent, backend.pids_parent}:
        for child in parent.glob("x*"):
            owner = child.name[1:].split("-", 1)[0]
            if child.is_dir() and owner.isdigit() and not _alive(int(owner)):
                try:
                    child.rmdir()
                except OSError:
                    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_serial = itertools.count()


class ExecutionCgroup:
    """The cgroup(s) of one execution: made with its limits, joined by its first process, read, removed."""

    def __init__(self, backend: Backend, memory_bytes: int, processes: int):
        self.backend = backend
        name = f"x{os.getpid()}-{next(_serial)}-{os.urandom(3).hex()}"
        self.memory = backend.memory_parent / name
        self.pids = backend.pids_parent / name
        try:
            self.memory.mkdir()
            if self.pids != self.memory:
                self.pids.mkdir()
            if backend.version == 2:
                _write(self.memory / "memory.max", str(memory_bytes))
                if (self.memory / "memory.swap.max").exists():
                    _write(self.memory / "memory.swap.max", "0")
            else:
                _write(self.memory / "memory.limit_in_bytes", str(memory_bytes))
                if (self.memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no swap either
                    _write(self.memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
            _write(self.pids / "pids.max", str(processes))
        except OSError as exc:
            self.remove()
            raise CgroupError(f"cannot make the execution's cgroup under {backend.memory_parent}: {exc}") from exc

    @property
    def procs_files(self) -> list[str]:
        """The files an execution's first process writes its pid to (one per hierarchy)."""
        return sorted({str(self.memory / "cgroup.procs"), str(self.pids / "cgroup.procs")})

    def peak_bytes(self) -> int | None:
        """The most memory the execution held at once (None where the kernel does not say)."""
        name = "memory.peak" if self.backend.version == 2 else "memory.max_usage_in_bytes"
        text = _read(self.memory / name).strip()
        return int(text) if text.isdigit() else None

    def oom_kills(self) -> int:
        """Processes the kernel killed because the execution reached its memory limit."""
        name = "memory.events" if self.backend.version == 2 else "memory.oom_control"
        for line in _read(self.memory / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def pids_now(self) -> list[int]:
        return [int(p) for p in _read(self.memory / "cgroup.procs").split() if p.isdigit()]

    def kill_all(self) -> int:
        """SIGKILL every process still in the cgroup until none is left (bounded by KILL_WAIT_S); returns how
        many were signalled."""
        killed = 0
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            pids = self.pids_now()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.002)  # for the kernel to take the killed out of cgroup.procs
        return killed

    def remove(self) -> None:
        """Remove the cgroup folders; waits (bounded by REMOVE_WAIT_S) for killed processes to be reaped."""
        deadline = time.monotonic() + REMOVE_WAIT_S
        for folder in {self.memory, self.pids}:
            while folder.is_dir():
                try:
                    folder.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise CgroupError(f"{folder} still has processes {REMOVE_WAIT_S:g} s after the execution "
                                          "ended") from None
                    time.sleep(0.002)


_probe: dict[str, tuple[Backend | None, str]] = {}


def probe() -> tuple[Backend | None, str]:
    """The backend this process can use (prepared), or None and why not; decided once per process."""
    if "result" not in _probe:
        _probe["result"] = _try_backend()
    return _probe["result"]


def _try_backend() -> tuple[Backend | None, str]:
    if os.geteuid() != 0:
        return None, "not running as root (only root may make cgroups here)"
    backend, why = find_backend()
    if backend is None:
        return None, why
    try:
        prepare(backend)
        trial = ExecutionCgroup(backend, 64 << 20, 8)
        trial.remove()
    except (OSError, CgroupError) as exc:
        return None, (f"cannot make cgroups under {backend.memory_parent} ({exc}); in a container the cgroup "
                      "filesystem is usually read-only or not delegated")
    return backend, ""
