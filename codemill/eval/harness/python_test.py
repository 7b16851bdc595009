"""HumanEval-X Python, the test's side: runs the problem's test in this process and the candidate in a child
process, so nothing the sample does can reach the test (its assertions, its expected values, this process's
builtins or the key of its proof). Run in the sandbox as `python3 -I -S -B python_test.py` (the test needs
only the standard library; the machine's .pth files are not run), with the job on
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
import subprocess
import sys
import traceback

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
        res_r, res_w = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", os.path.join(HERE, "python_candidate.py"),
                                      program, name, str(res_w)],
                                     stdin=subprocess.PIPE, pass_fds=(res_w,), close_fds=True)
        os.close(res_w)
        self.replies = os.fdopen(res_r, "rb")
        reply = self._receive()
        if "error" in reply:
            raise _as_exception(reply["error"])

    def __call__(self, *args, **kwargs):
        request = json.dumps({"args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}) + "\n"
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except OSError:
            raise CandidateGone(f"the candidate's process ended (status {self.proc.poll()}) before a call") from None
        reply = self._receive()
        if "error" in reply:
            raise _as_exception(reply["error"])
        return codec.decode(reply["value"])

    def _receive(self) -> dict:
        line = self.replies.readline(MAX_MESSAGE)
        if not line.endswith(b"\n"):
            status = self.proc.poll()
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
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _as_exception(error) -> BaseException:
    if not isinstance(error, dict):
        return CandidateGone("the candidate's process sent a malformed error")
    name, message = str(error.get("type")), str(error.get("message"))
    cls = BUILTIN_ERRORS.get(name)
    return cls(message) if cls is not None and name not in ("StopIteration", "StopAsyncIteration") \
        else RuntimeError(f"{name}: {message}")


HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    job = json.loads(sys.stdin.buffer.read())
    candidate = None
    try:
        candidate = Candidate(job["entry_point"], job["candidate"])
        scope = {"__name__": "__main__"}
        exec(compile(job["prelude"] + "\n    pass\n", "prompt.py", "exec"), scope)
        scope[job["entry_point"]] = candidate
        exec(compile(job["test"], "test.py", "exec"), scope)
    except BaseException:
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
