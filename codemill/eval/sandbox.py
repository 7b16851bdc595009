"""Run one untrusted command in a bubblewrap sandbox, bounded as a whole, with a wall-clock kill.

What a sandboxed command gets:
- no network (a new network namespace with nothing in it), a new PID, IPC, UTS and cgroup namespace,
  a new session (no controlling terminal to inject keystrokes into);
- a read-only root: `/usr` and the few `/etc` entries that compilers and runtimes read, a read-only `/dev`
  with the usual device nodes, a private size-limited `/tmp` and `/dev/shm`, and its work directory (writable
  for compile steps, read-only for test runs); nothing else of the host (no home, no repository, no other
  work directories);
- a clean environment: only the variables the caller names (no host variables, no secrets);
- a user id of its own (a fresh, unused uid for every execution when codemill runs as root), so the limit
  on processes counts only its own processes and no other process on the host can be signalled or read;
- limits for the whole execution where the host allows cgroups (codemill.eval.cgroups): its memory (pages,
  page cache, tmpfs) and its number of processes; and always rlimits per process: CPU seconds, data segment,
  processes, file size (which also bounds its output: stdout and stderr are files), open files, no cores;
- optionally a secret on file descriptor 3 (a pipe that can be read once: the per-run key of a test's proof
  of passing, codemill.eval.proof) and data on its standard input;
- a wall-clock limit after which the whole process tree is killed: the sandbox's PID 1 dies with the
  process we started (`--die-with-parent`), which makes the kernel kill every process of the namespace; every
  process left in its cgroup or with its uid is killed too. A background process cannot outlive it.

Without bubblewrap, `unsafe=True` runs the same command with the same limits, uid and clean environment,
but without namespaces: the caller must have been told so loudly (`--unsafe-no-sandbox`).
"""

from __future__ import annotations

import collections
import math
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codemill.eval import cgroups

# Paths of the host that a sandbox sees, read-only, when they exist. `/usr` holds every toolchain; the /etc
# entries are what the dynamic loader, the JDK (security settings), OpenSSL and alternatives symlinks read.
SYSTEM_RO_PATHS = ("/usr", "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
                   "/etc/ssl", "/etc/localtime", "/etc/java-17-openjdk", "/etc/java-21-openjdk",
                   "/etc/java-11-openjdk", "/usr/lib/ssl")
# Merged-/usr systems have these as symlinks into /usr; others have real folders.
TOP_LEVEL_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
UID_RANGE = (1_000_000, 1_900_000_000)  # fresh uids, far from any real account
# In a user namespace that maps fewer uids (a Kubernetes pod with hostUsers: false maps 65536), fresh uids
# come from the top of what is mapped, above this (far from the image's own accounts).
SMALL_NAMESPACE_FIRST_UID = 20_000
SANDBOX_HOSTNAME = "sandbox"
SECRET_FD = 3
OUTLIVED_MARKER = "codemill-sandbox: processes outlived the program:"
# Runs the command as a child, then counts the live processes of the PID namespace other than bwrap's init
# and this shell (what the namespace's teardown is about to kill) and reports them on stderr.
LEFTOVER_WRAPPER = (
    '"$@"; rc=$?; n=0; for p in /proc/[0-9]*; do q=${p#/proc/}; [ "$q" = 1 ] || [ "$q" = $$ ] && continue; '
    'line=; read -r line < "$p/stat" 2>/dev/null || continue; case "$line" in *") Z "*|*") X "*) continue;; esac; '
    'n=$((n+1)); done; [ $n -gt 0 ] && echo "' + OUTLIVED_MARKER + ' $n" >&2; exit $rc')
# The first process of an execution (root's, when codemill runs as root): waits until the caller has put it
# in the execution's cgroup ($1: the pipe that says so), puts the secret on fd 3 ($2), then becomes the
# sandbox (switching to the execution's uid through setpriv when there is one). bash, not sh: the pipes'
# descriptor numbers may have two digits.
LAUNCHER = ('[ "$1" = - ] || { read -r _ <&"$1"; eval "exec $1<&-"; }; '
            '[ "$2" = - ] || [ "$2" = 3 ] || { exec 3<&"$2"; eval "exec $2<&-"; }; shift 2; exec "$@"')
SCAN_CHUNK = 8 << 20


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here, and unsafe execution was not asked for."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0                  # wall-clock limit; the whole process tree is killed after it
    cpu_s: float | None = None            # RLIMIT_CPU per process; default: 2 x wall + 1
    memory_bytes: int = 2 << 30           # the whole execution's memory (cgroup); also RLIMIT_DATA per process
    processes: int = 256                  # the execution's processes and threads (cgroup and RLIMIT_NPROC)
    file_bytes: int = 64 << 20            # RLIMIT_FSIZE: any one file written, stdout and stderr included
    open_files: int = 256                 # RLIMIT_NOFILE
    tmp_bytes: int = 64 << 20             # size of the private /tmp (tmpfs)
    shm_bytes: int = 64 << 20             # size of the private /dev/shm (tmpfs)
    tail_bytes: int = 4096                # how much of the end of stdout/stderr is kept
    cgroups: str = "auto"                 # auto: a cgroup where the host allows one; require; off

    def cpu_seconds(self) -> int:
        return int(math.ceil(self.cpu_s if self.cpu_s is not None else 2 * self.wall_s + 1))


@dataclass
class SandboxResult:
    returncode: int | None        # exit status; negative = killed by that signal (subprocess's convention)
    timed_out: bool               # the wall-clock limit was reached and the tree killed
    seconds: float                # wall seconds
    stdout: str                   # tails (limits.tail_bytes)
    stderr: str
    stdout_bytes: int = 0         # how much it wrote in all
    stderr_bytes: int = 0
    leftover_killed: int = 0      # processes of its uid still alive after it ended (killed)
    outlived: int = 0             # processes it left running when its main process ended (then killed)
    sandboxed: bool = True
    limiter: str = "rlimits"      # what bounded the execution as a whole: cgroup-v1, cgroup-v2 or rlimits only
    memory_peak_bytes: int | None = None   # the most memory the execution held at once (cgroups only)
    oom_killed: int = 0           # processes the kernel killed at the execution's memory limit
    found: list[str] = field(default_factory=list)     # the `scan` patterns found anywhere in stdout or stderr
    captured: list[str] = field(default_factory=list)  # every match of `capture` in stdout, in order

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    def to_json(self) -> dict:
        return asdict(self)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


_probe_cache: dict[str, str | None] = {}
# The uids this process gave its latest executions (what a test checks for survivors).
recent_uids: collections.deque[int] = collections.deque(maxlen=10_000)


def probe_bwrap() -> str | None:
    """None when bubblewrap works here; otherwise why not (checked once per process)."""
    if "result" not in _probe_cache:
        exe = bwrap_path()
        if exe is None:
            _probe_cache["result"] = "bubblewrap (bwrap) is not installed; run scripts/setup-eval.sh"
        else:
            with tempfile.TemporaryDirectory(prefix="cm-probe-") as tmp:
                res = run_sandboxed(["/bin/true"], tmp, Limits(wall_s=20, cgroups="off"), env={}, unsafe=False,
                                    _probe=True)
            _probe_cache["result"] = None if res.returncode == 0 else (
                f"bubblewrap cannot create a sandbox here (exit {res.returncode}): {res.stderr.strip()[-300:]}. "
                "In a container it needs user namespaces, an unmasked /proc and no seccomp/AppArmor profile that "
                "forbids mounts (docs/eval.md, 'Containers')")
    return _probe_cache["result"]


def require_sandbox(unsafe: bool) -> None:
    """Raise SandboxUnavailable unless bubblewrap works, or the caller explicitly chose unsafe execution."""
    if unsafe:
        return
    why = probe_bwrap()
    if why:
        raise SandboxUnavailable(f"{why}. Refusing to execute untrusted code without a sandbox "
                                 "(--unsafe-no-sandbox overrides this; do not use it on a machine you care about)")


def limiter_for(limits: Limits) -> tuple[cgroups.Backend | None, str]:
    """The cgroup backend an execution with these limits uses (None: rlimits only), and why none."""
    if limits.cgroups == "off":
        return None, "cgroups are off (execution.cgroups)"
    backend, why = cgroups.probe()
    if backend is None and limits.cgroups == "require":
        raise SandboxUnavailable(f"execution.cgroups=require, but {why}")
    return backend, why


def uid_range(uid_map: str | None = None) -> tuple[int, int]:
    """The range fresh uids come from: UID_RANGE where this user namespace maps it, else the largest mapped
    range above SMALL_NAMESPACE_FIRST_UID."""
    if uid_map is None:
        try:
            uid_map = Path("/proc/self/uid_map").read_text()
        except OSError:
            return UID_RANGE
    ranges = []
    for line in uid_map.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            ranges.append((int(parts[0]), int(parts[0]) + int(parts[2])))
    if any(lo <= UID_RANGE[0] and UID_RANGE[1] <= hi for lo, hi in ranges):
        return UID_RANGE
    usable = [(max(lo, SMALL_NAMESPACE_FIRST_UID), hi) for lo, hi in ranges if hi > SMALL_NAMESPACE_FIRST_UID + 1]
    if not usable:
        raise RuntimeError(f"no uid range above {SMALL_NAMESPACE_FIRST_UID} is mapped in this user namespace "
                           f"({uid_map.strip()!r}): fresh uids for executions cannot be chosen")
    return max(usable, key=lambda r: r[1] - r[0])


def fresh_uid() -> int | None:
    """A uid no process uses, for one execution; None when we cannot switch users (not root)."""
    if os.geteuid() != 0:
        return None
    low, high = uid_range()
    for _ in range(100):
        uid = random.randrange(low, high)
        if not _pids_of_uid(uid):
            return uid
    raise RuntimeError("no free uid found")


def _pids_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes whose effective uid is `uid`: a stat of each /proc entry, the status file read
    only for the few that match."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"State:"):
                        if line.split()[1] not in (b"Z", b"X"):  # a zombie only waits for its parent to reap it
                            pids.append(int(name))
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return pids


def kill_uid(uid: int) -> int:
    """SIGKILL every process of `uid` until none is left; returns how many were killed."""
    killed = 0
    for _ in range(50):
        pids = _pids_of_uid(uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return killed


def bwrap_argv(workdir: str, env: dict[str, str], ro_binds: list[str], limits: Limits,
               writable: bool = True) -> list[str]:
    argv = [bwrap_path() or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--hostname", SANDBOX_HOSTNAME, "--cap-drop", "ALL"]
    for path in SYSTEM_RO_PATHS:
        if os.path.lexists(path) and not path.startswith("/usr/"):
            argv += ["--ro-bind", path, path]
    for path in TOP_LEVEL_LINKS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(limits.shm_bytes), "--tmpfs", "/dev/shm",
             "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    for path in ro_binds:
        argv += ["--ro-bind", path, path]
    argv += ["--bind" if writable else "--ro-bind", workdir, workdir, "--chdir", workdir,
             # bwrap's root and /dev are tmpfs mounts of their own: nothing may be written there.
             "--remount-ro", "/dev", "--remount-ro", "/", "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return argv + ["--"]


def prlimit_argv(limits: Limits, nproc: int | None = None) -> list[str]:
    return ["prlimit", f"--cpu={limits.cpu_seconds()}", f"--data={limits.memory_bytes}",
            f"--nproc={nproc or limits.processes}", f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}",
            "--core=0", "--"]


def tasks_of_uid(uid: int) -> int:
    """Processes and threads running as `uid` now (what RLIMIT_NPROC counts)."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f if b":" in line)
            if int(fields[b"Uid"].split()[0]) == uid:
                total += int(fields[b"Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def _tail(path: Path, n: int) -> tuple[str, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size > n:
            f.seek(size - n)
        return f.read().decode("utf-8", "replace"), size


def scan_output(paths: Sequence[Path], patterns: Sequence[bytes], capture: re.Pattern[bytes] | None = None,
                capture_from: int = 0) -> tuple[list[bytes], list[bytes]]:
    """(the patterns found anywhere in the files, every match of `capture` in paths[capture_from]), reading the
    files in chunks that overlap by the longest thing looked for."""
    found: set[bytes] = set()
    captured: dict[int, bytes] = {}
    overlap = max([len(p) for p in patterns] + [512])
    for index, path in enumerate(paths):
        offset = 0
        carry = b""
        with open(path, "rb") as f:
            while True:
                chunk = f.read(SCAN_CHUNK)
                if not chunk:
                    break
                window = carry + chunk
                start = offset - len(carry)
                found.update(p for p in patterns if p in window)
                if capture is not None and index == capture_from:
                    for m in capture.finditer(window):
                        captured.setdefault(start + m.start(), m.group(0))
                carry = window[-overlap:]
                offset += len(chunk)
    return [p for p in patterns if p in found], [captured[k] for k in sorted(captured)]


def run_sandboxed(argv: list[str], workdir: str, limits: Limits, env: dict[str, str],
                  ro_binds: list[str] | None = None, unsafe: bool = False, stdin_data: bytes | None = None,
                  secret: bytes | None = None, detect_leftovers: bool = False, writable: bool = True,
                  scan: Sequence[bytes] = (), capture: re.Pattern[bytes] | None = None,
                  _probe: bool = False) -> SandboxResult:
    """Run `argv` in `workdir` (which becomes owned by the execution's uid) and return what happened.

    Paths are the same inside and outside: `workdir` and each of `ro_binds` are mounted at their host paths.
    `writable=False` mounts the work directory read-only (then only the size-limited private /tmp and /dev/shm
    take writes, so a program cannot fill the host's disk); HOME is then /tmp. `secret` is readable once on
    file descriptor 3; `stdin_data` is the standard input. `scan` and `capture` look through all of stdout and
    stderr (not only the kept tails).
    """
    if not unsafe and not _probe:
        require_sandbox(False)
    workdir = os.path.abspath(workdir)
    backend, _ = limiter_for(limits)
    uid = fresh_uid()
    if uid is not None:
        recent_uids.append(uid)
        for root, dirs, files in os.walk(workdir):
            os.chown(root, uid, uid)
            for name in dirs + files:
                p = os.path.join(root, name)
                if not os.path.islink(p) and os.stat(p).st_nlink == 1 or os.path.isdir(p):
                    os.chown(p, uid, uid, follow_symlinks=False)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir if writable or unsafe else "/tmp",
           "TMPDIR": "/tmp", "LANG": "C.UTF-8", **env}
    switch_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid is not None else []
    # Without a uid of its own the execution shares the caller's, whose processes RLIMIT_NPROC counts too.
    nproc = limits.processes + (tasks_of_uid(os.getuid()) if uid is None else 0)
    if unsafe:
        command = switch_user + prlimit_argv(limits, nproc) + list(argv)
        popen_env = env
    else:
        wrapper = ["/bin/sh", "-c", LEFTOVER_WRAPPER, "sh"] if detect_leftovers else []
        command = (switch_user + prlimit_argv(limits, nproc) + bwrap_argv(workdir, env, list(ro_binds or []), limits,
                                                                           writable) + wrapper + list(argv))
        popen_env = {"PATH": "/usr/bin:/bin"}
    cgroup = cgroups.ExecutionCgroup(backend, limits.memory_bytes, limits.processes) if backend else None
    io_dir = Path(tempfile.mkdtemp(prefix="cm-io-"))
    out_path, err_path = io_dir / "stdout", io_dir / "stderr"
    pipes: list[int] = []
    started = time.monotonic()
    timed_out = False
    try:
        go_r = go_w = key_r = None
        if cgroup is not None:
            go_r, go_w = os.pipe()
            pipes += [go_r, go_w]
        if secret is not None:
            key_r, key_w = os.pipe()
            pipes.append(key_r)
            if uid is not None:
                os.fchown(key_r, uid, uid)  # so /proc/self/fd/3 may be opened too (the JVM reads it so)
            os.write(key_w, secret)  # small: fits the pipe's buffer
            os.close(key_w)
        launcher = ["/bin/bash", "-c", LAUNCHER, "launcher", "-" if go_r is None else str(go_r),
                    "-" if key_r is None else str(key_r)]
        with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
            proc = subprocess.Popen(launcher + command, cwd=workdir, env=popen_env, stdout=out_f, stderr=err_f,
                                    stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True,
                                    pass_fds=[fd for fd in (go_r, key_r) if fd is not None])
            for fd in (go_r, key_r):
                if fd is not None:
                    os.close(fd)
                    pipes.remove(fd)
            if cgroup is not None:
                pipes.remove(go_w)
                _join(cgroup, proc, go_w)
            if stdin_data is not None:
                threading.Thread(target=_feed, args=(proc, stdin_data), daemon=True).start()
            # A blocking wait ends when the process does (Popen.wait with a timeout polls, sleeping up to 50 ms
            # at a time); a timer kills the process group at the wall-clock limit.
            expired = threading.Event()
            timer = threading.Timer(limits.wall_s, lambda: (expired.set(), _kill_group(proc.pid)))
            timer.start()
            try:
                proc.wait()
            finally:
                timer.cancel()
            timed_out = expired.is_set()
            _kill_group(proc.pid)  # anything left in its process group (unsafe mode: background children)
        seconds = time.monotonic() - started
        peak = oom = None
        leftover = 0
        if cgroup is not None:  # every process of the execution is in it, whatever its uid or session
            leftover = cgroup.kill_all()
            peak, oom = cgroup.peak_bytes(), cgroup.oom_kills()
        if uid is not None:  # and every process of its uid (a fork bomb keeps forking while it is killed)
            leftover += kill_uid(uid)
        stdout, n_out = _tail(out_path, limits.tail_bytes)
        stderr, n_err = _tail(err_path, limits.tail_bytes)
        found, captured = scan_output([out_path, err_path], scan, capture) if scan or capture else ([], [])
    finally:
        for fd in pipes:
            os.close(fd)
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()
        shutil.rmtree(io_dir, ignore_errors=True)
    returncode = proc.returncode
    if not unsafe and not timed_out and returncode is not None and 128 < returncode <= 128 + 64:
        returncode = -(returncode - 128)  # bwrap (and sh) report a child killed by signal n as 128 + n
    outlived = leftover if unsafe else 0
    if OUTLIVED_MARKER in stderr:
        outlived = int(stderr.rsplit(OUTLIVED_MARKER, 1)[1].split()[0] or 0)
        stderr = stderr.replace(f"{OUTLIVED_MARKER} {outlived}\n", "")
    return SandboxResult(returncode=returncode, timed_out=timed_out, seconds=seconds, stdout=stdout,
                         stderr=stderr, stdout_bytes=n_out, stderr_bytes=n_err, leftover_killed=leftover,
                         outlived=outlived, sandboxed=not unsafe, limiter=backend.name if backend else "rlimits",
                         memory_peak_bytes=peak, oom_killed=oom or 0,
                         found=[p.decode() for p in found], captured=[c.decode() for c in captured])


def _join(cgroup: cgroups.ExecutionCgroup, proc: subprocess.Popen, go_w: int) -> None:
    """Put the launcher (still waiting, nothing untrusted started yet) into the cgroup, then let it go on."""
    try:
        for procs in cgroup.procs_files:
            with open(procs, "w") as f:
                f.write(str(proc.pid))
    except OSError as exc:
        _kill_group(proc.pid)
        proc.wait()
        os.close(go_w)
        raise cgroups.CgroupError(f"cannot put the execution into its cgroup: {exc}") from exc
    os.write(go_w, b"go\n")
    os.close(go_w)


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except OSError:
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def settings(limits: Limits, unsafe: bool) -> dict:
    """What summary.json records about the sandbox."""
    try:
        backend, why = limiter_for(limits)
    except SandboxUnavailable as exc:
        backend, why = None, str(exc)
    return {"sandbox": "none (--unsafe-no-sandbox)" if unsafe else "bubblewrap", "bwrap": bwrap_path(),
            "namespaces": [] if unsafe else ["net", "pid", "ipc", "uts", "cgroup", "user"],
            "network": "host" if unsafe else "none",
            "filesystem": "read-only root, /usr and selected /etc; private size-limited /tmp and /dev/shm; the work "
                          "directory (writable for compilers, read-only for the test run)",
            "environment": "cleared", "uid": "fresh per execution" if os.geteuid() == 0 else "the caller's",
            "whole_execution_limits": backend.name if backend else f"none: {why} (rlimits per process only)",
            **asdict(limits), "cpu_s": limits.cpu_seconds()}
