"""Samples that contain no solution and try to be scored `passed` anyway, per language and for MTPB: what
tests/stages/test_eval_redteam_scoring.py runs through the execution function and tests/e2e's red team through
the whole stage. Each completion is the body of task 0 of its language (Python/0, CPP/0, ...), unchanged by the
stop rules unless it says so; Go's need the imports GO_ATTACK_IMPORT gives (os, runtime, ...)."""

from __future__ import annotations

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
