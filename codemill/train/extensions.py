"""DeepSpeed's compiled ops, loaded without ever hanging on a dead process's build lock.

On a CPU, DeepSpeed builds its shared-memory comm op (`deepspeed_shm_comm`) with torch's JIT extension
loader under TORCH_EXTENSIONS_DIR the first time a process initialises it, and every later load still takes
the build folder's `lock` file while it checks the build. The lock is a bare file (torch's `FileBaton`): a
process killed while holding it (a preempted node, a SIGKILLed run, Ctrl-C at the wrong second) leaves it
behind, and every later load waits on it forever, silently.

So before DeepSpeed starts, the train worker loads the ops itself (`load_train_ops`): loads on one node are
serialised by an `flock` beside the build folder (released by the kernel when its holder dies, however it
dies), and under it a `lock` file that no process has open is a stale one, removed with a log line. A lock
that a live process holds (a foreign build) is waited for, up to `OP_BUILD_WAIT_S`, then the load fails
naming the file. `python -m codemill.train.extensions` builds the ops ahead (scripts/setup.sh, the image).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("codemill.train")

# The ops the train stage makes DeepSpeed load on this machine's accelerator: builder class names.
CPU_OPS = ("ShareMemCommBuilder",)
OP_BUILD_WAIT_S = 1800.0  # a first build of the comm op takes 1-3 minutes on 2 busy cores
POLL_S = 0.5  # the node lock: a cheap non-blocking flock
HELD_POLL_S = 2.0  # a build lock a live process holds: each look scans /proc (a fraction of a second when busy)
LOG_EVERY_S = 30.0
TORCH_LOCK = "lock"  # torch.utils.cpp_extension's FileBaton, inside the op's build folder


class OpBuildTimeout(RuntimeError):
    pass


def lock_holders(path: Path) -> list[int]:
    """The pids of processes that have `path` open (torch's FileBaton keeps its lock file open while it
    holds it). Processes whose descriptors cannot be read (other users) are not seen."""
    target = os.path.realpath(path)
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        holders.append(int(proc.name))
                        break
        except OSError:
            continue
    return holders


def clear_stale_lock(lock: Path, wait_s: float = OP_BUILD_WAIT_S, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> bool:
    """Make sure `lock` (torch's build lock) will not block a load: removed with a log line when no process
    holds it (True), waited for while one does, up to `wait_s` (then OpBuildTimeout naming the file)."""
    deadline = clock() + wait_s
    next_log = clock()
    while True:
        try:
            stat = lock.stat()
        except FileNotFoundError:
            return False
        holders = lock_holders(lock)
        if not holders:
            # FileBaton closes its file just before removing it: look again once, so a holder that is
            # releasing the lock right now is not mistaken for a dead one.
            sleep(0.1)
            try:
                again = lock.stat()
            except FileNotFoundError:
                return False
            if (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns) and not lock_holders(lock):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                log.warning("removed the stale build lock %s (left %.0f s ago by a process that no longer runs); "
                            "the op loads now", lock, max(0.0, time.time() - stat.st_mtime))
                return True
            continue
        now = clock()
        if now >= deadline:
            raise OpBuildTimeout(f"the build lock {lock} is still held by pid(s) {holders} after {wait_s:.0f} s; "
                                 f"if that process is stuck, stop it or remove the file")
        if now >= next_log:
            log.info("waiting for pid(s) %s, which hold the build lock %s (up to %.0f s more)", holders, lock,
                     deadline - now)
            next_log = now + LOG_EVERY_S
        sleep(HELD_POLL_S)


@contextlib.contextmanager
def node_lock(path: Path, wait_s: float = OP_BUILD_WAIT_S, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """An exclusive `flock` on `path`, waited for up to `wait_s` (another rank on this node building the op);
    the kernel drops it when its holder dies, so it can never be stale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = clock() + wait_s
        next_log = clock() + LOG_EVERY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = clock()
                if now >= deadline:
                    raise OpBuildTimeout(f"another process on this node held {path} for over {wait_s:.0f} s while "
                                         f"building or loading a DeepSpeed op; if it is stuck, stop it") from None
                if now >= next_log:
                    log.info("waiting for another process building a DeepSpeed op (lock %s, up to %.0f s more)",
                             path, deadline - now)
                    next_log = now + LOG_EVERY_S
                sleep(POLL_S)
        yield
    finally:
        os.close(fd)


def build_dir(op_name: str) -> Path:
    """Where torch builds (and DeepSpeed loads) an op: TORCH_EXTENSIONS_DIR/<op>, or the default root."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(op_name, verbose=False))


def load_op(builder, wait_s: float = OP_BUILD_WAIT_S) -> object:
    """Load (building if needed) one DeepSpeed op, clearing a stale build lock first. DeepSpeed keeps the
    loaded module, so its own later load of the op returns at once."""
    folder = build_dir(builder.NAME)
    with node_lock(folder.parent / f".{builder.NAME}.codemill-lock", wait_s):
        clear_stale_lock(folder / TORCH_LOCK, wait_s)
        started = time.monotonic()
        module = builder.load()
        log.info("DeepSpeed op %s ready in %.1f s (%s)", builder.NAME, time.monotonic() - started, folder)
        return module


def train_op_builders() -> list:
    """The builders of the ops DeepSpeed will load for the train stage on this machine's accelerator."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    builders = []
    if accelerator.device_name() == "cpu":
        for name in CPU_OPS:
            builder = accelerator.create_op_builder(name)
            # DeepSpeed itself skips an op its build checks found incompatible here (comm/torch.py)
            if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
                builders.append(builder)
    return builders


def load_train_ops(wait_s: float = OP_BUILD_WAIT_S) -> list[str]:
    """Load every op the train stage needs here, before DeepSpeed asks for them; their names."""
    names = []
    for builder in train_op_builders():
        load_op(builder, wait_s)
        names.append(builder.NAME)
    return names


def main() -> None:
    from codemill.logs import setup_logging

    setup_logging()
    names = load_train_ops()
    print(f"DeepSpeed ops ready: {', '.join(names) or 'none needed on this accelerator'}")


if __name__ == "__main__":
    main()
