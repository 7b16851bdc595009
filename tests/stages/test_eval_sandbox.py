"""Sandboxed execution in every HumanEval-X language: each outcome class, and a red-team suite whose attacks
must all be contained, reported as failures, leave the host untouched and leave no process behind.

Every toolchain is required (scripts/setup-eval.sh installs them); nothing here is skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from codemill.eval import languages as L
from codemill.eval import sandbox
from codemill.eval.execute import ExecLimits, execute_sample
from codemill.eval.sandbox import Limits
from codemill.eval.toolchain import default_toolchain, work_root
from codemill.humaneval import Problem, load_problems

LIMITS = ExecLimits(run=Limits(wall_s=3.0), retry_timeouts=False)
SECRET_ENV = "CM_REDTEAM_SECRET"


@pytest.fixture(scope="module")
def tc():
    return default_toolchain()


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def sandbox_processes() -> list[int]:
    """Live processes with a uid that this process's sandboxes used (none may survive an execution)."""
    uids = set(sandbox.recent_uids)
    assert uids
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields.get("Uid", "0").split()[0])
        if uid in uids and fields.get("State", "").split()[0] not in ("Z", "X"):
            found.append(int(name))
    return found


def test_bubblewrap_works_here():
    assert sandbox.probe_bwrap() is None


def test_refuses_without_bubblewrap_unless_unsafe(monkeypatch):
    monkeypatch.setattr(sandbox, "_probe_cache", {"result": "bubblewrap (bwrap) is not installed"})
    with pytest.raises(sandbox.SandboxUnavailable, match="--unsafe-no-sandbox"):
        sandbox.require_sandbox(unsafe=False)
    sandbox.require_sandbox(unsafe=True)  # explicitly asked for: no error


def test_sandbox_view_of_the_host():
    os.environ[SECRET_ENV] = "visible-on-host"
    try:
        work = Path(tempfile.mkdtemp(dir=work_root()))
        script = (f"id -u; echo HOME=$HOME; echo SECRET=${{{SECRET_ENV}:-none}}; ls /; "
                  "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /root 2>&1 | head -1; touch /usr/x 2>&1 | head -1; "
                  "hostname")
        res = sandbox.run_sandboxed(["/bin/sh", "-c", script], str(work), Limits(wall_s=10), env={})
    finally:
        os.environ.pop(SECRET_ENV)
        shutil.rmtree(work, ignore_errors=True)
    lines = res.stdout.splitlines()
    assert res.returncode == 0, res.stderr
    assert int(lines[0]) >= sandbox.UID_RANGE[0]                 # a fresh uid, not root
    assert lines[1] == f"HOME={work}" and lines[2] == "SECRET=none"
    assert "root" not in res.stdout.split("\n", 3)[3].split()[:12]  # no /root, /home, /work in the root listing
    assert "bwrap" in res.stdout                                   # PID 1 of its namespace is bwrap's init
    assert "No such file" in res.stdout and "Read-only" in res.stdout
    assert lines[-1] == sandbox.SANDBOX_HOSTNAME


# ------------------------------------------------------------------ outcome classes in every language

BROKEN = {  # language -> kind -> completion of problem 0 (has_close_elements)
    "Python": {
        "compile": "    return 1 +* 2\n",
        "crash": "    raise RuntimeError('boom')\n",
        "loop": "    while True:\n        pass\n",
        "unfinished": "    return any(abs(a - b) < threshold\n               for a in numbers\n",
    },
    "C++": {
        "compile": "    return undefined_name;\n}\n",
        "crash": "    vector<int> *p = nullptr;\n    return p->at(3) > 0;\n}\n",
        "loop": "    while (numbers.size() >= 0) {}\n    return false;\n}\n",
        "unfinished": "    for (int i = 0; i < numbers.size(); i++) {\n        if (numbers[i] > threshold) {\n",
    },
    "Java": {
        "compile": "        return undefinedName;\n    }\n}\n",
        "crash": "        throw new IllegalStateException(\"boom\");\n    }\n}\n",
        "loop": "        while (numbers.size() >= 0) { }\n        return false;\n    }\n}\n",
        "unfinished": "        for (int i = 0; i < numbers.size(); i++) {\n            return true;\n        }\n",
    },
    "JavaScript": {
        "compile": "  return numbers.map(x => x +* 2);\n}\n",
        "crash": "  throw new Error('boom');\n}\n",
        "loop": "  while (numbers.length >= 0) {}\n}\n",
        "unfinished": "  for (let i = 0; i < numbers.length; i++) {\n    if (numbers[i] > threshold) {\n",
    },
    "Go": {
        "compile": "    return undefinedName\n}\n",
        "crash": "    var m map[string]int\n    m[\"x\"] = 1\n    return false\n}\n",
        "loop": "    for len(numbers) >= 0 {\n    }\n    return false\n}\n",
        "unfinished": "    for i := 0; i < len(numbers); i++ {\n        if numbers[i] > threshold {\n",
    },
}
EXPECTED = {"compile": L.COMPILE_ERROR, "crash": L.RUNTIME_ERROR, "loop": L.TIMEOUT, "unfinished": L.UNFINISHED}


def _task(language: str, number: int = 0) -> str:
    from codemill.humaneval import task_id_for
    return task_id_for(language, number)


@pytest.mark.parametrize("language", L.LANGUAGES)
def test_outcome_classes(language, tc, problems):
    problem = problems[_task(language)]
    a = L.adapter(language)
    got = {"canonical": execute_sample(problem, problem.canonical_solution, "generation", tc, LIMITS).outcome,
           "wrong": execute_sample(problem, a.wrong_completion(problem), "generation", tc, LIMITS).outcome}
    for kind, completion in BROKEN[language].items():
        got[kind] = execute_sample(problem, completion, "generation", tc, LIMITS).outcome
    expected = {"canonical": L.PASSED, "wrong": L.WRONG_ANSWER, **EXPECTED}
    assert got == expected
    assert sandbox_processes() == []


def test_javascript_assertion_failed_with_exit_0_is_a_failure(tc, problems):
    problem = problems["JavaScript/0"]
    res = execute_sample(problem, "  return !(numbers.length > 5);\n}\n", "generation", tc, LIMITS)
    assert res.outcome == L.WRONG_ANSWER and res.returncode == 0 and "Assertion failed" in res.stderr


def test_timeout_is_run_once_more(tc, problems):
    problem = problems["Python/0"]
    limits = ExecLimits(run=Limits(wall_s=1.0), retry_timeouts=True)
    started = time.monotonic()
    res = execute_sample(problem, BROKEN["Python"]["loop"], "generation", tc, limits)
    assert res.outcome == L.TIMEOUT and res.retried
    assert time.monotonic() - started >= 2.0
    # A compiled program is retried too (the run step again, on the same binary).
    problem = problems["CPP/0"]
    res = execute_sample(problem, BROKEN["C++"]["loop"], "generation", tc, limits)
    assert res.outcome == L.TIMEOUT and res.retried and res.seconds >= 1.0


def test_test_run_cannot_fill_the_disk(tc, problems):
    """The test run sees its work directory read-only; only its private /tmp (64 MiB) takes writes."""
    problem = problems["Python/0"]
    fill = ("    import os\n    try:\n        open('big', 'wb').write(b'x' * 1024)\n    except OSError:\n"
            "        pass\n    else:\n        return None\n    for i in range(1024):\n"
            "        with open(f'/tmp/f{i}', 'wb') as f:\n            f.write(b'x' * (1 << 20))\n")
    res = execute_sample(problem, fill + problem.canonical_solution, "generation", tc, LIMITS)
    assert res.outcome == L.RUNTIME_ERROR and "No space left" in res.stderr


# ------------------------------------------------------------------ red team

ATTACKS = ("fork_bomb", "connect", "write_outside", "env_secret", "file_secret", "alloc_10gb", "infinite_loop",
           "output_1gb", "background")


def _python(kind: str, ctx: dict) -> str:
    return {
        "fork_bomb": "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
                     "            pass\n",
        "connect": f"    import socket\n    try:\n        socket.create_connection(('127.0.0.1', {ctx['port']}), "
                   "timeout=2).sendall(b'x')\n    except OSError:\n        return None\n",
        "write_outside": "".join(f"    try:\n        open({p!r}, 'w').write('pwned')\n    except OSError:\n"
                                 "        return None\n" for p in ctx["outside"]),
        "env_secret": f"    import os\n    if os.environ.get({SECRET_ENV!r}) != {ctx['secret']!r}:\n        return None\n",
        "file_secret": f"    try:\n        if open({ctx['secret_file']!r}).read() != {ctx['secret']!r}:\n"
                       "            return None\n    except OSError:\n        return None\n",
        "alloc_10gb": "    hog = bytearray(10 * 1024 ** 3)\n    hog[-1] = 1\n",
        "infinite_loop": "    while True:\n        pass\n",
        "output_1gb": "    import sys\n    for _ in range(1024):\n        sys.stdout.write('x' * (1 << 20))\n",
        "background": "    import subprocess\n    subprocess.Popen(['sleep', '60'], start_new_session=True)\n",
    }[kind]


CPP_HEADER = ("    bool cm_attack(vector<float>, float);\n    return cm_attack(numbers, threshold);\n}\n"
              "#include <unistd.h>\n#include <sys/socket.h>\n#include <netinet/in.h>\n#include <arpa/inet.h>\n"
              "bool cm_attack(vector<float> numbers, float threshold){\n")


def _cpp(kind: str, ctx: dict) -> str:
    return CPP_HEADER + {
        "fork_bomb": "    while (numbers.size() >= 0) fork();\n",
        "connect": f"    int s = socket(AF_INET, SOCK_STREAM, 0);\n    sockaddr_in a;\n    memset(&a, 0, sizeof a);\n"
                   f"    a.sin_family = AF_INET;\n    a.sin_port = htons({ctx['port']});\n"
                   "    inet_pton(AF_INET, \"127.0.0.1\", &a.sin_addr);\n"
                   "    if (connect(s, (sockaddr*)&a, sizeof a) != 0) return false;\n    write(s, \"x\", 1);\n",
        "write_outside": "".join(f"    {{ FILE *f = fopen(\"{p}\", \"w\"); if (!f) return false; fputs(\"pwned\", f); "
                                 "fclose(f); }\n" for p in ctx["outside"]),
        "env_secret": f"    const char *v = getenv(\"{SECRET_ENV}\");\n"
                      f"    if (!v || string(v) != \"{ctx['secret']}\") return false;\n",
        "file_secret": f"    FILE *f = fopen(\"{ctx['secret_file']}\", \"r\");\n    if (!f) return false;\n"
                       "    char buf[256] = {0};\n    fread(buf, 1, 255, f);\n"
                       f"    if (string(buf) != \"{ctx['secret']}\") return false;\n",
        "alloc_10gb": "    char *hog = new char[10UL << 30];\n    memset(hog, 1, 10UL << 30);\n",
        "infinite_loop": "    while (numbers.size() >= 0) {}\n",
        "output_1gb": "    string s(1 << 20, 'x');\n    for (int i = 0; i < 1024; i++) fwrite(s.data(), 1, s.size(), stdout);\n",
        "background": "    if (fork() == 0) { setsid(); sleep(60); _exit(0); }\n",
    }[kind]


def _java(kind: str, ctx: dict) -> str:
    return {
        "fork_bomb": "        while (numbers.size() >= 0) { try { new ProcessBuilder(\"sleep\", \"60\").start(); } "
                     "catch (Exception e) { } }\n",
        "connect": f"        try {{ new java.net.Socket(\"127.0.0.1\", {ctx['port']}).getOutputStream().write(1); }} "
                   "catch (Exception e) { return false; }\n",
        "write_outside": "".join(f"        try {{ java.nio.file.Files.writeString(java.nio.file.Path.of(\"{p}\"), "
                                 "\"pwned\"); } catch (Exception e) { return false; }\n" for p in ctx["outside"]),
        "env_secret": f"        if (!\"{ctx['secret']}\".equals(System.getenv(\"{SECRET_ENV}\"))) return false;\n",
        "file_secret": "        try { if (!java.nio.file.Files.readString(java.nio.file.Path.of("
                       f"\"{ctx['secret_file']}\")).equals(\"{ctx['secret']}\")) return false; }} "
                       "catch (Exception e) { return false; }\n",
        "alloc_10gb": "        List<byte[]> hog = new ArrayList<>();\n"
                      "        for (int i = 0; i < 100; i++) hog.add(new byte[100 << 20]);\n",
        "infinite_loop": "        while (numbers.size() >= 0) { }\n",
        "output_1gb": "        for (int i = 0; i < 1024; i++) System.out.print(\"x\".repeat(1 << 20));\n",
        "background": "        try { new ProcessBuilder(\"sleep\", \"60\").start(); } catch (Exception e) { }\n",
    }[kind]


def _js(kind: str, ctx: dict) -> str:
    return {
        "fork_bomb": "  const cp = require('child_process');\n"
                     "  while (numbers.length >= 0) { try { cp.spawn('sleep', ['60']); } catch (e) {} }\n",
        "connect": "  try {\n    require('child_process').execFileSync(process.execPath, ['-e', "
                   f"\"require('net').connect({ctx['port']}, '127.0.0.1').on('connect', function () "
                   "{ this.write('x'); this.end(); process.exit(0) }).on('error', () => process.exit(1))\"]);\n"
                   "  } catch (e) { return false; }\n",
        "write_outside": "".join(f"  try {{ require('fs').writeFileSync('{p}', 'pwned'); }} catch (e) {{ return false; }}\n"
                                 for p in ctx["outside"]),
        "env_secret": f"  if (process.env.{SECRET_ENV} !== '{ctx['secret']}') return false;\n",
        "file_secret": f"  try {{ if (require('fs').readFileSync('{ctx['secret_file']}', 'utf8') !== '{ctx['secret']}') "
                       "return false; } catch (e) { return false; }\n",
        "alloc_10gb": "  const hog = [];\n  for (let i = 0; i < 100; i++) hog.push(Buffer.alloc(100 * 1024 * 1024, 1));\n",
        "infinite_loop": "  while (numbers.length >= 0) {}\n",
        "output_1gb": "  for (let i = 0; i < 1024; i++) process.stdout.write('x'.repeat(1 << 20));\n",
        "background": "  require('child_process').spawn('sleep', ['60'], {detached: true, stdio: 'ignore'}).unref();\n",
    }[kind]


def _go(kind: str, ctx: dict) -> str:
    return {
        "fork_bomb": "    for len(numbers) >= 0 {\n        exec.Command(\"sleep\", \"60\").Start()\n    }\n",
        "connect": f"    c, err := net.Dial(\"tcp\", \"127.0.0.1:{ctx['port']}\")\n    if err != nil {{\n"
                   "        return false\n    }\n    c.Write([]byte(\"x\"))\n",
        "write_outside": "".join(f"    if os.WriteFile(\"{p}\", []byte(\"pwned\"), 0644) != nil {{\n        return false\n"
                                 "    }\n" for p in ctx["outside"]),
        "env_secret": f"    if os.Getenv(\"{SECRET_ENV}\") != \"{ctx['secret']}\" {{\n        return false\n    }}\n",
        "file_secret": f"    if b, err := os.ReadFile(\"{ctx['secret_file']}\"); err != nil || string(b) != \"{ctx['secret']}\" "
                       "{\n        return false\n    }\n",
        "alloc_10gb": "    hog := [][]byte{}\n    for i := 0; i < 100; i++ {\n        b := make([]byte, 100<<20)\n"
                      "        b[0] = 1\n        hog = append(hog, b)\n    }\n    _ = hog\n",
        "infinite_loop": "    for len(numbers) >= 0 {\n    }\n",
        "output_1gb": "    for i := 0; i < 1024; i++ {\n        fmt.Print(strings.Repeat(\"x\", 1<<20))\n    }\n",
        "background": "    exec.Command(\"sleep\", \"60\").Start()\n",
    }[kind]


ATTACK_CODE = {"Python": _python, "C++": _cpp, "Java": _java, "JavaScript": _js, "Go": _go}
GO_ATTACK_IMPORT = 'import (\n    "math"\n    "net"\n    "os"\n    "os/exec"\n)\n'


def _attack_problem(problem: Problem) -> Problem:
    """Go programs only import what the problem's prompt imports; the red team's Go problem imports the
    packages an attacker would want (the sandbox, not the import list, must stop them)."""
    if problem.language != "Go":
        return problem
    prompt = problem.prompt.replace(problem.import_, GO_ATTACK_IMPORT, 1)
    return replace(problem, prompt=prompt, import_=GO_ATTACK_IMPORT)


class LoopbackServer:
    """A TCP server on the host's loopback that counts connections (none may arrive from a sandbox)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture()
def server():
    s = LoopbackServer()
    # The server itself works from the host: one connection, counted, then reset.
    socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
    deadline = time.time() + 5
    while s.connections < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert s.connections == 1
    s.connections = 0
    yield s
    s.close()


@pytest.mark.parametrize("language", L.LANGUAGES)
def test_red_team(language, tc, problems, server, tmp_path):
    """Every attack of ATTACKS in this language, three at a time."""
    problem = _attack_problem(problems[_task(language)])
    secret = "s3cr3t-" + uuid.uuid4().hex
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(secret)
    secret_file.chmod(0o644)
    outside = [str(tmp_path / "outside.txt"), f"/usr/cm-redteam-{uuid.uuid4().hex}.txt"]
    ctx = {"port": server.port, "secret": secret, "secret_file": str(secret_file), "outside": outside}

    def attack(name: str):
        # The attack code runs first; then the correct solution follows, so a sample passes exactly when the
        # attack was not stopped by the sandbox. No post-processing: the sandbox must stop any program (the
        # C++ attack closes the function early to include system headers).
        completion = ATTACK_CODE[language](name, ctx) + problem.canonical_solution
        started = time.monotonic()
        res = execute_sample(problem, completion, "generation", tc, LIMITS, postprocess=False)
        return name, res, time.monotonic() - started

    os.environ[SECRET_ENV] = secret
    try:
        with ThreadPoolExecutor(3) as pool:
            results = {name: (res, elapsed) for name, res, elapsed in pool.map(attack, ATTACKS)}
    finally:
        os.environ.pop(SECRET_ENV, None)
    for name, (res, elapsed) in results.items():
        assert res.outcome not in (L.PASSED, L.UNFINISHED, L.COMPILE_ERROR), (name, res.outcome, res.stderr)
        assert elapsed < 45, name
        if name == "infinite_loop":
            assert res.outcome == L.TIMEOUT
        if name in ("output_1gb", "background"):
            assert res.outcome == L.RUNTIME_ERROR, (name, res.outcome)
    assert server.connections == 0
    assert not any(os.path.exists(p) for p in outside)
    assert sandbox_processes() == []


def test_unsafe_mode_still_limits_and_cleans_up(tc, problems):
    """--unsafe-no-sandbox: no namespaces, but the same clean environment, fresh uid, rlimits and cleanup."""
    problem = problems["Python/0"]
    os.environ[SECRET_ENV] = "visible-on-host"
    try:
        env_probe = ("    import os\n    if os.environ.get('CM_REDTEAM_SECRET'):\n        return None\n"
                     + problem.canonical_solution)
        assert execute_sample(problem, env_probe, "generation", tc, LIMITS, unsafe=True).outcome == L.PASSED
    finally:
        os.environ.pop(SECRET_ENV)
    ctx = {"port": 1, "secret": "", "secret_file": "", "outside": []}
    res = execute_sample(problem, _python("background", ctx) + problem.canonical_solution, "generation", tc, LIMITS,
                         unsafe=True)
    assert res.outcome == L.RUNTIME_ERROR and "still running" in res.stderr
    assert execute_sample(problem, _python("infinite_loop", ctx), "generation", tc, LIMITS, unsafe=True).outcome \
        == L.TIMEOUT
    assert sandbox_processes() == []
