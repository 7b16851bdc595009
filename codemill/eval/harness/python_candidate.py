"""HumanEval-X Python, the candidate's side: loads the sample's program (imports + prompt + completion) and
answers the test's calls of one function, arguments and results as data (codec.py). Run by python_test.py as
`python3 -I -B python_candidate.py PROGRAM NAME REPLY_FD`: requests arrive on stdin, one JSON line each;
replies go to REPLY_FD. Whatever the sample does here reaches only its own answers. Started with -S, it puts
the machine's site-packages on sys.path itself (a sample may import numpy) without running their .pth files.
"""

from __future__ import annotations

import json
import os
import site
import sys

try:  # imported by codemill (tests): the package's codec
    from codemill.eval.harness import codec
except ImportError:  # in the sandbox: the copy beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import codec

sys.path.extend(p for p in site.getsitepackages() if os.path.isdir(p) and p not in sys.path)
site.setquit()  # exit() and quit(), as an interpreter started with its site module has them


def describe(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)[:2000]}


def main() -> None:
    program, name, reply_fd = sys.argv[-3], sys.argv[-2], int(sys.argv[-1])
    replies = os.fdopen(reply_fd, "w")
    requests = sys.stdin
    sys.stdin = open(os.devnull)

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        with open(program, encoding="utf-8") as f:
            source = f.read()
        scope = {"__name__": "__main__"}
        exec(compile(source, "main.py", "exec"), scope)
        function = scope[name]
    except BaseException as exc:
        import traceback

        traceback.print_exc()
        reply({"error": describe(exc)})
        return
    reply({"ready": True})
    for line in requests:
        try:
            call = json.loads(line)
            args, kwargs = codec.decode(call["args"]), codec.decode(call["kwargs"])
            value = function(*args, **kwargs)
            message = {"value": codec.encode(value)}
        except BaseException as exc:
            import traceback

            traceback.print_exc()
            message = {"error": describe(exc)}
        reply(message)


if __name__ == "__main__":
    main()
