"""The watchdog of a local Ray head that must not outlive the process that started it.

`python -m codemill.head_reaper FD HEAD_PID ROOT` blocks reading FD, the read end of a pipe whose write end
only the starting process holds. When that process ends, however it ends (SIGKILL and the OOM killer
included, which no handler sees), the kernel closes the write end, the read returns, and the reaper stops
the head: SIGTERM to its process group, `GRACE_S` for Ray to stop its processes, then SIGKILL to every
process left in the head's session or naming its temp dir (raylet, GCS, dashboard, agents, workers).
A head stopped normally closes the pipe too; the reaper then finds nothing left and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from codemill.raycluster import kill_session, session_processes

GRACE_S = 2.0
GONE_WAIT_S = 5.0  # after SIGKILL, how long to wait for the processes to disappear (for the log line)


def reap(head_pid: int, root: str, grace_s: float = GRACE_S) -> int:
    """Stop what is left of the head; how many processes needed SIGKILL."""
    try:
        os.killpg(head_pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while session_processes(head_pid, root) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_processes(head_pid, root)
    if left:
        kill_session(head_pid, root)
        gone_by = time.monotonic() + GONE_WAIT_S
        while session_processes(head_pid, root) and time.monotonic() < gone_by:
            time.sleep(0.1)
    return len(left)


def main(argv: list[str]) -> None:
    fd, head_pid, root = int(argv[0]), int(argv[1]), argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the runner, which stops the head
    while os.read(fd, 4096):  # returns b"" once every write end is closed
        pass
    killed = reap(head_pid, root)
    if killed:
        print(f"head_reaper: the process that started the Ray head (pid {head_pid}, {root}) ended; "
              f"{killed} of its processes were killed", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
