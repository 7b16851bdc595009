"""MTPB: runs one program in this process and reports what it printed last, as data (codec.py), so that codemill
compares it with the expected output outside the sandbox: no file or variable the program can read holds the
expected output. Run in the sandbox as

    python3 -I -S -B mtpb_runner.py SCORING TIME_S PROGRAM_FILE

SCORING is `strict` (codemill's default) or `codegen` (CodeGen's mtpb_exec.py: the last statement wrapped in
print as its harness rewrites it, its reliability guard, an in-process alarm after TIME_S, and the last print
scored even when the program then raised or timed out). After the program, the run's key is read from fd 3
and one line is printed: `CODEMILL-MTPB <HMAC-SHA256(key, record)> <record>`, the record being JSON
{"status": "finished" | "raised" | "exited", "error": str, "printed": number of print calls,
"value": the first argument of the last print call (encoded), absent when there is none}. In strict mode a
program that raises reports nothing (its traceback classes the outcome); in both modes a program that ends
the process itself (os._exit) or consumes the key reports nothing, and fails.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import hmac
import json
import os
import signal
import site
import sys
import traceback

try:  # imported by codemill (tests, scoring): the package's codec
    from codemill.eval.harness import codec
except ImportError:  # in the sandbox: the copy beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import codec

# numpy, pandas and scikit-learn come from the machine's site-packages (their .pth files are not run).
sys.path.extend(p for p in site.getsitepackages() if os.path.isdir(p) and p not in sys.path)

KEY_FD = 3
MAX_RECORD = 8 << 20
_write, _read, _mac = os.write, os.read, hmac.new  # kept before the program can replace them


def report(record: dict) -> None:
    """The record line, MAC'd with the run's key (nothing when the key is gone)."""
    key = _read(KEY_FD, 4096)
    if not key:
        return
    text = json.dumps(record, separators=(",", ":"))
    if len(text) > MAX_RECORD:
        text = json.dumps({**record, "value": None, "error": f"the printed value is larger than {MAX_RECORD} "
                           "bytes encoded", "too_large": True}, separators=(",", ":"))
    digest = _mac(key, text.encode(), hashlib.sha256).hexdigest()
    _write(1, f"\nCODEMILL-MTPB {digest} {text}\n".encode())


def encoded_last(printed: list) -> dict:
    if not printed:
        return {"printed": 0}
    args = printed[-1]
    if not args:
        return {"printed": len(printed), "no_argument": True}
    try:
        return {"printed": len(printed), "value": codec.encode(args[0])}
    except Exception as exc:
        return {"printed": len(printed), "error": f"the printed value cannot be read ({type(exc).__name__}: {exc})"}


# ------------------------------------------------------------------------------------------- strict


def print_last_expression(tree: ast.Module) -> ast.Module:
    """`f(2)` as the last statement becomes `print(f(2))` (a notebook's last line is shown)."""
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not (isinstance(last.value, ast.Call) and isinstance(last.value.func, ast.Name)
                                           and last.value.func.id.startswith("print")):
        last.value = ast.Call(func=ast.Name(id="print", ctx=ast.Load()), args=[last.value], keywords=[])
        ast.fix_missing_locations(tree)
    return tree


def run_strict(source: str, path: str) -> int:
    tree = print_last_expression(ast.parse(source, path))
    printed: list[tuple] = []

    def recording_print(*args, **kwargs):
        printed.append(args)
        return builtins.print(*args, **kwargs)

    scope = {"__name__": "__main__", "__builtins__": builtins, "print": recording_print}
    status = "finished"
    try:
        exec(compile(tree, path, "exec"), scope)
    except SystemExit:
        status = "exited"  # the program ended itself: what it printed until then is scored
    sys.stdout.flush()
    report({"status": status, **encoded_last(printed)})
    return 0


# ------------------------------------------------------------------------------------------- codegen
# CodeGen's mtpb_exec.py (codegen1/benchmark, BSD-3-Clause), reimplemented: what its eval_problem does to one
# program, in the same order and with the same quirks (e.g. a last assignment `x = f()` becomes `x = print(f())`).


def codegen_rewrite_with_print(code: str) -> str:
    """try_rewrite_ast_with_print: unless the last statement's value is a call of a name starting with
    `print`, wrap the last statement's `.value` in print(...); the code unchanged when that fails."""
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        try:
            ends_with_print = last.value.func.id.startswith("print")
        except Exception:
            ends_with_print = False
        if ends_with_print:
            return code
        last.value = ast.Call(func=ast.Name(id="print", ctx=ast.Load()), args=[last.value], keywords=[])
        ast.fix_missing_locations(tree)
        return ast.unparse(tree)
    except Exception as exc:
        print(exc)  # as the reference does
        return code


def codegen_reliability_guard() -> None:
    """reliability_guard(), without its memory rlimit (the sandbox's cgroup bounds the whole execution)."""
    import faulthandler
    import shutil
    import subprocess

    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "tkinter"):
        sys.modules[name] = None


class TimeoutException(Exception):
    pass


OVERLOAD_PRINT = """import builtins
def print(*args, **kwargs):
    global print_stack
    print_stack.append({'args': args, 'kwargs': kwargs})
    return builtins.print(*args, **kwargs)
"""


def run_codegen(source: str, time_s: float) -> int:
    import io
    from contextlib import redirect_stdout

    code = codegen_rewrite_with_print(source)
    # The reference's harness module had imported these before its guard (so a program finds numpy already
    # loaded, and anything imported after the guard meets its None-ed functions, as there).
    import argparse  # noqa: F401
    import glob  # noqa: F401
    import platform  # noqa: F401
    import random  # noqa: F401
    try:
        import numpy  # noqa: F401
    except ImportError:
        pass
    codegen_reliability_guard()
    scope = {"print_stack": [], "__name__": "__main__"}
    exec(OVERLOAD_PRINT, scope)

    def on_alarm(signum, frame):
        raise TimeoutException("Timed out!")

    status, error = "finished", ""
    signal.setitimer(signal.ITIMER_REAL, time_s)
    signal.signal(signal.SIGALRM, on_alarm)
    captured = io.StringIO()
    try:
        with redirect_stdout(captured):
            try:
                exec(code, scope)
            except Exception as exc:  # the reference's do_exec: an exception (its timeout too) is noted, not fatal
                status, error = "raised", f"{type(exc).__name__}: {exc}"
    except BaseException as exc:  # SystemExit and the like: the reference's whole evaluation stops there
        status, error = "exited", f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    sys.stdout.write(captured.getvalue()[-65536:])
    sys.stdout.flush()
    try:  # the reference's print_stack[-1]["args"][0]
        value = scope["print_stack"][-1]["args"][0]
    except Exception as exc:
        report({"status": status, "error": error or f"no printed value ({type(exc).__name__}: {exc})", "printed": 0})
        return 0
    report({"status": status, "error": error, **encoded_last([(value,)])})
    return 0


def main(argv: list[str]) -> int:
    scoring, time_s, path = argv[0], float(argv[1]), argv[2]
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        if scoring == "codegen":
            return run_codegen(source, time_s)
        return run_strict(source, path)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
