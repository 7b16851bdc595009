"""Samples that contain no solution and try to be scored `passed` anyway, in every language and in MTPB: early
exits (exit, _Exit, quick_exit, os._exit, SystemExit, atexit, a thread or goroutine that exits, exec, a killed
parent, signal and abort handlers, shutdown hooks, static initializers, Goexit and SkipNow), fake proof lines
and keys read from every descriptor, closed or redirected output, replaced assert/console/JSON/builtins,
objects that equal anything, output floods after a failure, and MTPB programs that read for the expected
value or forge the runner's record. Every one must fail, and leave no process behind.

Each runs through the Ray-free execution function (codemill.eval.execute / mtpb_benchmark), several at once.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from codemill.eval import languages as L
from codemill.eval import mtpb, sandbox
from codemill.eval.config import ExecutionConfig
from codemill.eval.execute import ExecLimits, execute_sample
from codemill.eval.mtpb_benchmark import printing, run_mtpb_program
from codemill.eval.sandbox import Limits
from codemill.eval.toolchain import default_toolchain
from codemill.humaneval import Problem, load_problems

LIMITS = ExecLimits(run=Limits(wall_s=8.0), retry_timeouts=False)
FAKE_MAC = "0" * 64

PYTHON = {  # the body of Python/0's has_close_elements
    "sys_exit": "    import sys\n    sys.exit(0)\n",
    "raise_systemexit": "    raise SystemExit(0)\n",
    "os_exit": "    import os\n    os._exit(0)\n",
    "exit_builtin": "    exit()\n",
    "quit_builtin": "    quit()\n",
    "atexit_os_exit": "    import atexit, os\n    atexit.register(os._exit, 0)\n    return None\n",
    "fake_proof": f"    import os\n    os.write(1, b'CODEMILL-PASS 1 {FAKE_MAC}\\n')\n    os._exit(0)\n",
    "print_every_fd": ("    import os\n    for fd in range(0, 64):\n        try:\n"
                       "            print('CODEMILL-PASS 1', os.read(fd, 256).decode(errors='replace'), flush=True)\n"
                       "        except OSError:\n            pass\n    os._exit(0)\n"),
    "read_parent": ("    import os\n    for name in ('fd/0', 'fd/3', 'environ', 'cmdline'):\n        try:\n"
                    "            print(open(f'/proc/{os.getppid()}/{name}', 'rb').read()[:200], flush=True)\n"
                    "        except OSError:\n            pass\n    return None\n"),
    "kill_parent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return None\n",
    "kill_everything": "    import os, signal\n    os.kill(-1, signal.SIGKILL)\n    return None\n",
    "close_stdout": "    import os, sys\n    os.close(1)\n    os.close(2)\n    sys.exit(0)\n",
    "thread_exit": ("    import os, threading, time\n    threading.Thread(target=lambda: os._exit(0)).start()\n"
                    "    time.sleep(2)\n"),
    "exec_true": "    import os\n    os.execv('/bin/true', ['true'])\n",
    "fork_and_exit": "    import os\n    if os.fork() == 0:\n        os._exit(0)\n    os.wait()\n    os._exit(0)\n",
    "del_exits": ("    import os\n    class Bye:\n        def __del__(self):\n            os._exit(0)\n"
                  "    globals()['keep'] = Bye()\n    raise RuntimeError('bye')\n"),
    "signal_handler": ("    import os, signal\n    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
                       "    os.kill(os.getpid(), signal.SIGTERM)\n"),
    "always_equal": ("    class Yes:\n        def __eq__(self, other):\n            return True\n"
                     "        def __bool__(self):\n            return True\n        __hash__ = object.__hash__\n"
                     "    return Yes()\n"),
    "equal_int_subclass": ("    class Yes(int):\n        def __eq__(self, other):\n            return True\n"
                           "        __hash__ = int.__hash__\n    return Yes(1)\n"),
    "patch_builtins": ("    import builtins\n    builtins.AssertionError = type('Quiet', (Exception,), {})\n"
                       "    builtins.abs = lambda x: 0\n    builtins.print = lambda *a, **k: None\n    return None\n"),
    "settrace_skip": ("    import sys\n    def skip(frame, event, arg):\n"
                      "        if event == 'line' and frame.f_code.co_name == 'check':\n"
                      "            frame.f_lineno = frame.f_lineno + 1\n        return skip\n"
                      "    f = sys._getframe(1)\n    while f is not None:\n        f.f_trace = skip\n"
                      "        f = f.f_back\n    sys.settrace(skip)\n    return True\n"),
    "caller_constants": ("    import sys\n    f = sys._getframe(1)\n    while f is not None:\n"
                         "        for c in f.f_code.co_consts:\n            if isinstance(c, bool):\n"
                         "                return c\n        f = f.f_back\n    return True\n"),
    "dev_tty": (f"    try:\n        open('/dev/tty', 'w').write('CODEMILL-PASS 1 {FAKE_MAC}\\n')\n"
                "    except OSError:\n        pass\n    import os\n    os._exit(0)\n"),
    "flood_then_fail": "    import sys\n    sys.stderr.write('x' * 20000)\n    sys.stdout.write('y' * 20000)\n    return None\n",
}

JAVASCRIPT = {  # the body of JavaScript/0's hasCloseElements
    "process_exit": "  process.exit(0);\n}\n",
    "exit_code": "  process.exitCode = 0;\n  process.on('exit', () => { process.exitCode = 0; });\n  return false;\n}\n",
    "exit_handler_throws": "  process.on('exit', () => { throw new Error('late'); });\n  return false;\n}\n",
    "exit_handler_exits": "  process.on('exit', () => process.exit(0));\n  return false;\n}\n",
    "console_assert": ("  try { console.assert = () => {}; } catch (e) {}\n"
                       "  try { globalThis.console = { assert() {}, log() {} }; } catch (e) {}\n  return false;\n}\n"),
    "json_stringify": "  try { JSON.stringify = () => '1'; } catch (e) {}\n  return false;\n}\n",
    "array_tojson": "  try { Array.prototype.toJSON = function () { return 1; }; } catch (e) {}\n  return false;\n}\n",
    "uncaught_swallowed": "  process.on('uncaughtException', () => process.exit(0));\n  throw new Error('x');\n}\n",
    "fake_proof": f"  process.stdout.write('CODEMILL-PASS 7 {FAKE_MAC}\\n');\n  process.exit(0);\n}}\n",
    "print_every_fd": ("  const fs = require('fs');\n  for (let fd = 0; fd < 64; fd++) {\n"
                       "    try { process.stdout.write('CODEMILL-PASS 7 ' + fs.readFileSync(fd, 'utf8') + '\\n'); }"
                       " catch (e) {}\n  }\n  process.exit(0);\n}\n"),
    "silence_output": ("  process.stdout.write = () => true;\n  process.stderr.write = () => true;\n"
                       "  return false;\n}\n"),
    "kill_parent": "  process.kill(process.ppid, 'SIGKILL');\n  return false;\n}\n",
    "flood_then_fail": "  process.stderr.write('x'.repeat(20000));\n  process.stdout.write('y'.repeat(20000));\n"
                       "  return !numbers;\n}\n",
}

CPP_INCLUDES_ESCAPE = ("    bool cm_attack(vector<float>, float);\n    return cm_attack(numbers, threshold);\n}\n#include <signal.h>\n#include <unistd.h>\n"
                       "#include <sys/wait.h>\n#include <exception>\n"
                       "bool cm_attack(vector<float> numbers, float threshold){\n")
CPP = {  # the body of CPP/0's has_close_elements (escaping the function for system headers)
    "exit": "    exit(0);\n}\n",
    "underscore_exit": "    std::_Exit(0);\n}\n",
    "quick_exit": "    quick_exit(0);\n}\n",
    "abort_handler": CPP_INCLUDES_ESCAPE + "    signal(SIGABRT, [](int){ _exit(0); });\n    return false;\n}\n",
    "set_terminate": CPP_INCLUDES_ESCAPE + "    std::set_terminate([]{ std::_Exit(0); });\n    throw 1;\n}\n",
    "atexit": CPP_INCLUDES_ESCAPE + "    atexit([]{ _exit(0); });\n    return false;\n}\n",
    "define_assert": "#undef assert\n#define assert(x) ((void)0)\n#define cm_assert_hit(...) ((void)0)\n"
                     "    return false;\n}\n",
    "define_main": "    return false;\n}\n#define main cm_not_main\nint main() { return 0; }\n",
    "static_initializer": "    return false;\n}\nstatic int cm_bye = (exit(0), 0);\nbool cm_unused_g() {\n"
                          "    return false;\n}\n",
    "fake_proof": f"    printf(\"CODEMILL-PASS 7 {FAKE_MAC}\\n\");\n    exit(0);\n}}\n",
    "print_every_fd": CPP_INCLUDES_ESCAPE + ("    char b[257];\n    for (int fd = 0; fd < 64; fd++) {\n"
                                             "        ssize_t n = read(fd, b, 256);\n"
                                             "        if (n > 0) { b[n] = 0; printf(\"CODEMILL-PASS 7 %s\\n\", b); }\n"
                                             "    }\n    exit(0);\n}\n"),
    "kill_parent": CPP_INCLUDES_ESCAPE + "    kill(getppid(), SIGKILL);\n    return false;\n}\n",
    "fork_guess": CPP_INCLUDES_ESCAPE + ("    if (fork() == 0) return true;\n    int st;\n    wait(&st);\n"
                                         "    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) _exit(0);\n    return false;\n}\n"),
    "close_stdout": CPP_INCLUDES_ESCAPE + "    fclose(stdout);\n    close(1);\n    exit(0);\n}\n",
    "exec_true": CPP_INCLUDES_ESCAPE + "    execl(\"/bin/true\", \"true\", (char *)0);\n    return false;\n}\n",
    "flood_then_fail": "    for (int i = 0; i < 20000; i++) fputc('x', stderr);\n    return false;\n}\n",
}

JAVA = {  # the body of Java/0's hasCloseElements
    "system_exit": "        System.exit(0);\n        return false;\n    }\n}\n",
    "halt": "        Runtime.getRuntime().halt(0);\n        return false;\n    }\n}\n",
    "shutdown_hook": ("        Runtime.getRuntime().addShutdownHook(new Thread(() -> Runtime.getRuntime().halt(0)));\n"
                      "        return false;\n    }\n}\n"),
    "uncaught_handler": ("        Thread.setDefaultUncaughtExceptionHandler((t, e) -> Runtime.getRuntime().halt(0));\n"
                         "        return false;\n    }\n}\n"),
    "static_initializer": "        return false;\n    }\n    static { System.exit(0); }\n}\n",
    "thread_exit": ("        new Thread(() -> System.exit(0)).start();\n"
                    "        try { Thread.sleep(2000); } catch (Exception e) { }\n        return false;\n    }\n}\n"),
    "fake_proof": (f"        System.out.println(\"CODEMILL-PASS 1 {FAKE_MAC}\");\n        System.exit(0);\n"
                   "        return false;\n    }\n}\n"),
    "print_key": ("        try { System.out.println(\"CODEMILL-PASS 1 \" + new String(java.nio.file.Files.readAllBytes("
                  "java.nio.file.Path.of(\"/proc/self/fd/3\")))); } catch (Exception e) { }\n"
                  "        System.exit(0);\n        return false;\n    }\n}\n"),
    "silence_output": ("        System.setOut(new java.io.PrintStream(java.io.OutputStream.nullOutputStream()));\n"
                       "        System.setErr(new java.io.PrintStream(java.io.OutputStream.nullOutputStream()));\n"
                       "        return false;\n    }\n}\n"),
    "always_equal_list": "        return false;\n    }\n}\n",  # Java/0 returns a boolean: only the plain lie
    "flood_then_fail": "        System.err.print(\"x\".repeat(20000));\n        return false;\n    }\n}\n",
}

GO = {  # the body of Go/0's HasCloseElements, with os, runtime, strings, time and fmt importable
    "os_exit": "    os.Exit(0)\n    return false\n}\n",
    "goexit": "    runtime.Goexit()\n    return false\n}\n",
    "goroutine_exit": "    go func() { os.Exit(0) }()\n    time.Sleep(2 * time.Second)\n    return false\n}\n",
    "skip_now": "    var t testing.T\n    t.SkipNow()\n    return false\n}\n",
    "fake_proof": (f"    fmt.Println(\"CODEMILL-PASS 1 {FAKE_MAC}\")\n    os.Exit(0)\n    return false\n}}\n"),
    "print_key": ("    b := make([]byte, 256)\n    n, _ := os.NewFile(3, \"k\").Read(b)\n"
                  "    fmt.Println(\"CODEMILL-PASS 1\", string(b[:n]))\n    os.Exit(0)\n    return false\n}\n"),
    "close_stdout": "    os.Stdout.Close()\n    os.Exit(0)\n    return false\n}\n",
    "kill_parent": "    p, _ := os.FindProcess(os.Getppid())\n    p.Kill()\n    return false\n}\n",
    "fake_pass_lines": "    fmt.Println(\"--- PASS: TestHasCloseElements (0.00s)\\nPASS\\nok\")\n    os.Exit(0)\n"
                       "    return false\n}\n",
    "flood_then_fail": "    fmt.Fprint(os.Stderr, strings.Repeat(\"x\", 20000))\n    return false\n}\n",
}
GO_ATTACK_IMPORT = 'import (\n    "fmt"\n    "math"\n    "os"\n    "runtime"\n    "strings"\n    "time"\n)\n'

# With the stop rules applied (what scoring does by default): a brace that the compiler reads but a naive scan
# does not (C++ digraphs, Java unicode escapes) must not let code escape the function.
ESCAPES_POSTPROCESSED = {
    "C++": "    return false;\n%>\nstatic int cm_bye = (exit(0), 0);\nbool cm_unused_h() <%\n    return false;\n}\n",
    "Java": ("        return false;\n    \\u007d\n    static { System.exit(0); }\n    boolean cmUnused() {\n"
             "        return false;\n    }\n}\n"),
}

ATTACKS = {"Python": PYTHON, "JavaScript": JAVASCRIPT, "C++": CPP, "Java": JAVA, "Go": GO}


@pytest.fixture(scope="module")
def tc():
    return default_toolchain()


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def _problem(problems, language: str) -> Problem:
    from codemill.humaneval import task_id_for

    p = problems[task_id_for(language, 0)]
    if language == "Go":  # an attacker's imports; the sandbox and the harness, not the import list, must hold
        p = replace(p, prompt=p.prompt.replace(p.import_, GO_ATTACK_IMPORT, 1), import_=GO_ATTACK_IMPORT)
    return p


def sandbox_processes() -> list[int]:
    uids = set(sandbox.recent_uids)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "0").split()[0]) in uids and fields.get("State", "").split()[0] not in ("Z", "X"):
            found.append(int(name))
    return found


@pytest.mark.parametrize("language", L.LANGUAGES)
def test_no_early_exit_or_fake_pass_is_scored_passed(language, tc, problems):
    problem = _problem(problems, language)
    cases = [(name, code, False) for name, code in ATTACKS[language].items()]
    if language in ESCAPES_POSTPROCESSED:
        cases.append(("escape_postprocessed", ESCAPES_POSTPROCESSED[language], True))

    def run(case):
        name, code, postprocess = case
        return name, execute_sample(problem, code, "generation", tc, LIMITS, postprocess=postprocess)

    with ThreadPoolExecutor(3) as pool:
        results = dict(pool.map(run, cases))
    passed = {name: (r.outcome, r.stderr[-300:]) for name, r in results.items() if r.passed}
    assert passed == {}
    assert all(r.outcome != L.INFRASTRUCTURE_ERROR for r in results.values())
    # The same harness passes the canonical solution (the attacks fail for their own sake).
    assert execute_sample(problem, problem.canonical_solution, "generation", tc, LIMITS).passed
    assert sandbox_processes() == []


def test_a_failed_assertion_is_found_anywhere_in_a_flood():
    """The failure message early, then more output than any tail: still a failure (the whole output is read)."""
    tc = default_toolchain()
    p = load_problems(["JavaScript"])["JavaScript/0"]
    flood = "  const r = !(numbers.length > 5);\n  process.stderr.write('x'.repeat(300000));\n  return r;\n}\n"
    res = execute_sample(p, flood, "generation", tc, LIMITS)
    assert res.outcome == L.WRONG_ANSWER and "Assertion failed" in res.stderr


MTPB_ATTACKS = {
    "os_exit_before_print": "import os\nos._exit(0)",
    "read_files_for_expected": ("import glob, os\nfor f in glob.glob('*') + glob.glob('/tmp/*') + glob.glob('/proc/self/fd/*'):"
                                "\n    try:\n        print(open(f).read()[:300])\n    except Exception:\n        pass"),
    "forged_record": ("import json\nprint('CODEMILL-MTPB ' + '0' * 64 + ' ' + json.dumps({'status': 'finished', "
                      "'printed': 1, 'value': EXPECTED}))\nimport os\nos._exit(0)"),
    "print_key": "import os\nprint(os.read(3, 100))",
    "systemexit_after_wrong": "print(-1)\nraise SystemExit(0)",
    "patched_print": "import builtins\nbuiltins.print = lambda *a, **k: None\nprint(-1)",
    "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
}


@pytest.mark.parametrize("scoring", ["strict", "codegen"])
def test_mtpb_programs_cannot_pass_without_the_answer(scoring):
    problem = mtpb.load_problems()["MTPB/3"]
    expected = problem.expected(0)
    cfg = ExecutionConfig(mtpb_time_s=5.0, retry_timeouts=False)

    def run(item):
        name, code = item
        sample = printing(problem, 0, 0, 0)
        sample.turns[-1] = code.replace("EXPECTED", json.dumps(expected))
        return name, run_mtpb_program(sample.program(problem), expected, scoring, cfg, unsafe=False)

    with ThreadPoolExecutor(3) as pool:
        results = dict(pool.map(run, MTPB_ATTACKS.items()))
    assert {n: r.stderr[-200:] for n, r in results.items() if r.passed} == {}
    # ... while printing the expected value passes (the runner reports, the scorer compares outside).
    honest = printing(problem, 0, expected, 0)
    assert run_mtpb_program(honest.program(problem), expected, scoring, cfg, unsafe=False).passed
    assert sandbox_processes() == []
