"""HumanEval-X Python, the test's side: runs the problem's test in this process and the candidate in a child
process, so nothing the sample does can reach the test (its assertions, its expected values, this process's
builtins or the key of its proof). Run in the sandbox as `python3 -I -S -B -c "...import python_test;
python_test.main()"` (imported, so its compiled bytecode is used; the test needs only the standard library
and the machine's .pth files are not run), with the job on
standard input: {"prelude": imports + prompt (the helpers the test may call), "test": the test,
"entry_point": the candidate's name, "candidate": the candidate's program file}. The key of the proof is read
from fd 3 after the test returned, when the candidate's process is gone.

The child never inherits fd 3 or this process's stdin, and this process is not dumpable, so the child (same
uid) cannot read its memory, environment or file descriptors through /proc or ptrace. Arguments and return
values cross as data (codec.py): a returned object that claims to equal anything arrives as an Opaque that
equals nothing.
"""

from __future__ import annotations

import builtins
import ctypes
import hashlib
import hmac
import json
import os
import re
import sys
import time

try:  # imported by codemill (tests, scoring): the package's codec
    from codemill.eval.harness import codec
except ImportError:  # in the sandbox: the copy beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import codec

PR_SET_DUMPABLE = 4
KEY_FD = 3
MAX_MESSAGE = 256 << 20
STOP_WAIT_S = 2.0
# Exceptions a candidate's error is raised as in the test, so the outcome is classed as if it ran in-process.
BUILTIN_ERRORS = {name: obj for name, obj in vars(builtins).items()
                  if isinstance(obj, type) and issubclass(obj, Exception)}


class CandidateGone(RuntimeError):
    """The candidate's process ended or broke the protocol."""


class Candidate:
    """The candidate function, called across the process boundary."""

    def __init__(self, name: str, program: str):
        self.__name__ = name
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        os.set_inheritable(res_w, True)
        # The child gets the requests on stdin and its reply pipe; not the key (fd 3) nor this process's pipes.
        actions = [(os.POSIX_SPAWN_DUP2, req_r, 0), (os.POSIX_SPAWN_CLOSE, KEY_FD)]
        start = (f"import sys; sys.path.insert(0, {HERE!r}); import python_candidate; "
                 "sys.exit(python_candidate.main())")
        self.pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-B", "-c", start, program, name,
                                                   str(res_w)], os.environ, file_actions=actions)
        for fd in (req_r, res_w):
            os.close(fd)
        self.requests = os.fdopen(req_w, "wb")
        self.replies = os.fdopen(res_r, "rb")
        self.status: int | None = None

    def ready(self) -> None:
        reply = self._receive()
        if "error" in reply:
            raise _as_exception(reply["error"])

    def __call__(self, *args, **kwargs):
        request = json.dumps({"args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}) + "\n"
        try:
            self.requests.write(request.encode())
            self.requests.flush()
        except OSError:
            raise CandidateGone(f"the candidate's process ended (status {self.poll()}) before a call") from None
        reply = self._receive()
        if "error" in reply:
            raise _as_exception(reply["error"])
        return codec.decode(reply["value"])

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def _receive(self) -> dict:
        line = self.replies.readline(MAX_MESSAGE)
        if not line.endswith(b"\n"):
            status = self.poll()
            raise CandidateGone("the candidate's process ended" + (f" (status {status})" if status is not None
                                                                   else "") + " without answering")
        try:
            reply = json.loads(line)
        except ValueError:
            raise CandidateGone("the candidate's process answered something that is not a reply") from None
        if not isinstance(reply, dict) or not ({"value", "error", "ready"} & set(reply)):
            raise CandidateGone("the candidate's process answered something that is not a reply")
        return reply

    def stop(self) -> None:
        """Close its requests; wait up to STOP_WAIT_S for it to end, then kill it."""
        try:
            self.requests.close()
        except OSError:
            pass
        deadline = time.monotonic() + STOP_WAIT_S
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.poll() is None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)


def _as_exception(error) -> BaseException:
    if not isinstance(error, dict):
        return CandidateGone("the candidate's process sent a malformed error")
    name, message = str(error.get("type")), str(error.get("message"))
    cls = BUILTIN_ERRORS.get(name)
    return cls(message) if cls is not None and name not in ("StopIteration", "StopAsyncIteration") \
        else RuntimeError(f"{name}: {message}")


HERE = os.path.dirname(os.path.abspath(__file__))


def needed_imports(prelude: str, test: str) -> str:
    """The prelude with only the imports the prompt or the test name (the candidate's process has them all):
    `import statistics` costs time, and the test never uses it."""
    lines = []
    for line in prelude.splitlines(keepends=True):
        m = re.fullmatch(r"import (\w+)\n?", line)
        if m and not re.search(rf"\b{m.group(1)}\b", prelude.replace(line, "", 1) + test):
            continue
        lines.append(line)
    return "".join(lines)


def main() -> int:
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    job = json.loads(sys.stdin.buffer.read())
    candidate = None
    try:
        candidate = Candidate(job["entry_point"], job["candidate"])  # starts loading while the test prepares
        scope = {"__name__": "__main__"}
        prelude = needed_imports(job["prelude"], job["test"])
        try:
            code = compile(prelude + "\n    pass\n", "prompt.py", "exec")  # a signature needs a body
        except SyntaxError:
            code = compile(prelude, "prompt.py", "exec")
        exec(code, scope)
        candidate.ready()
        scope[job["entry_point"]] = candidate
        exec(compile(job["test"], "test.py", "exec"), scope)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        if candidate is not None:
            candidate.stop()
        return 1
    candidate.stop()
    key = os.read(KEY_FD, 4096)
    if key:
        line = f"\nCODEMILL-PASS 1 {hmac.new(key, b'codemill-pass 1', hashlib.sha256).hexdigest()}\n"
        os.write(1, line.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
