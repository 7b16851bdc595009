"""One adapter per HumanEval-X language: prompts, stop rules, post-processing, the test program, the
commands that build and run it, and how their results map to an outcome class.

Prompts follow SPEC §8: generation = language tag line + prompt; translation = `code translation\\n{Src}:\\n
{src declaration + canonical solution}\\n{Tgt}:\\n{tgt declaration}`. Programs follow CodeGeeX's harness
(imports helper + prompt + generation + test), with its known failures fixed (Java is compiled and run, Go
builds offline in GOPATH mode against the system's testify, JavaScript's `console.assert` output counts) and
each test wrapped in codemill's harness (codemill/eval/harness/), which prints the proof of a pass only after
the last assertion ran (codemill.eval.proof) and keeps the sample away from the test where the language
allows: Python runs the candidate in a process of its own; C++ routes `assert` and `main` to a separately
compiled main after undefining every macro the sample defined; Java and Go keep the harness in a file of its
own; JavaScript freezes the objects the test compares with and hides the test in a strict function. The
sources are removed before a compiled test runs, and JavaScript's program arrives on standard input, so a
sample cannot read the test's expected values from a file.
"""

from __future__ import annotations

import codeop
import json
import re
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from codemill.humaneval import Problem
from codemill.languages import tag_line

# Outcome classes (SPEC §8, the paper's Figure 7, plus timeout; memory_limit when the execution reached its
# memory limit; infrastructure_error when the execution itself was lost, e.g. its worker died twice: not the
# sample's doing, so not scored, and retried by a plain rerun).
PASSED = "passed"
WRONG_ANSWER = "wrong_answer"
RUNTIME_ERROR = "runtime_error"
COMPILE_ERROR = "compile_error"
TIMEOUT = "timeout"
MEMORY_LIMIT = "memory_limit"
UNFINISHED = "unfinished"
INFRASTRUCTURE_ERROR = "infrastructure_error"
OUTCOMES = (PASSED, WRONG_ANSWER, RUNTIME_ERROR, COMPILE_ERROR, TIMEOUT, MEMORY_LIMIT, UNFINISHED,
            INFRASTRUCTURE_ERROR)
LANGUAGES = ("Python", "C++", "Java", "JavaScript", "Go")
HARNESS_DIR = Path(__file__).resolve().parent / "harness"
PYTHON_HARNESS = ("codec.py", "python_test.py", "python_candidate.py", "mtpb_runner.py")

PYTHON_IMPORTS = ("import math", "import re", "import sys", "import copy", "import datetime", "import itertools",
                  "import collections", "import heapq", "import statistics", "import functools", "import hashlib",
                  "import string", "from typing import *", "from collections import *")
CPP_INCLUDES = ("#include<stdlib.h>", "#include<algorithm>", "#include<math.h>", "#include<stdio.h>",
                "#include<vector>", "#include<string>", "#include<climits>", "#include<cstring>",
                "#include<iostream>", "#include<cassert>")
GO_HELPER_PACKAGES = ("math", "strings", "fmt", "strconv", "time", "bytes", "regexp", "sort", "math/rand",
                      "crypto/md5")


@cache
def harness_file(name: str) -> str:
    """The text of one of codemill/eval/harness/'s files."""
    return (HARNESS_DIR / name).read_text(encoding="utf-8")


def python_harness_files(tc: Toolchain) -> tuple[dict[str, str], list[str], str]:
    """(files to write into the work directory, folders to bind, where the harness modules are) for a program
    run by one of the Python harness modules: the machine's compiled copy when there is one."""
    if tc.python_harness_dir:
        return {}, [tc.python_harness_dir], tc.python_harness_dir
    return {name: harness_file(name) for name in PYTHON_HARNESS}, [], "."


def python_module_argv(tc: Toolchain, folder: str, module: str, call: str, *args: str) -> list[str]:
    """`python3 -I -S -B -c` importing a harness module from `folder` (so its bytecode is used) and calling it."""
    return [tc.python, "-I", "-S", "-B", "-c", f"import sys; sys.path.insert(0, {folder!r}); import {module}; "
            f"sys.exit({module}.{call})", *args]


@dataclass
class Step:
    """One command of a build-and-run: `compile` steps fail as compile errors, `run` steps are the test. A run
    step gets the run's key on fd 3 and ends with the proof of a pass (codemill.eval.proof)."""

    kind: str                     # "compile" | "run"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None      # the run's standard input (JavaScript's program, the Python test's job)


@dataclass
class Program:
    """What to write into the work directory and what to run there."""

    files: dict[str, str]          # relative name -> content
    steps: list[Step]
    ro_binds: list[str] = field(default_factory=list)   # extra host paths the sandbox may read
    needs_go_cache: bool = False
    remove_before_run: list[str] = field(default_factory=list)  # sources the test run must not read


@dataclass
class Toolchain:
    """Where the toolchains and their offline libraries are (the defaults are Debian's paths)."""

    python: str = "/usr/bin/python3"
    gxx: str = "g++"
    cpp_std: str = "c++11"
    cpp_pch_dir: str | None = None     # folder with cm_pch.h(.gch), precompiled once per machine
    cpp_harness_obj: str | None = None  # harness/cm_harness.cpp compiled once per machine (else with each sample)
    javac: str = "javac"
    javac_cds: str | None = None       # a class-data-sharing archive of javac (faster start), made once
    java_harness_dir: str | None = None  # harness/CmHarness.class compiled once (else with each sample)
    python_harness_dir: str | None = None  # harness/*.py with bytecode, compiled once (else copied, compiled)
    java: str = "java"
    node: str = "node"
    node_modules: str | None = None    # folder holding js-md5
    go: str = "go"
    gopath: str = "/usr/share/gocode"
    java_heap_mb: int = 1024


# ---------------------------------------------------------------- brace scanning (C++, Java, JS, Go)


def close_braces(text: str, depth: int, target: int, language: str) -> int | None:
    """Index just past the `}` where the brace depth, starting at `depth`, first falls to `target`, skipping
    string and character literals and comments (and reading C++'s `<%` `%>` digraphs as braces); None when
    it never does (the function is not closed)."""
    i, n = 0, len(text)
    quotes = {"Go": ('"', "'", "`"), "JavaScript": ('"', "'", "`")}.get(language, ('"', "'"))
    digraphs = language == "C++"
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in quotes:
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\" and c != "`":
                    j += 1
                elif text[j] == "\n" and c != "`":
                    break  # an unterminated literal ends at the line
                j += 1
            i = j + 1
            continue
        if digraphs and text.startswith("<%", i):
            c, i = "{", i + 1
        elif digraphs and text.startswith("%>", i):
            c, i = "}", i + 1
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == target:
                return i + 1
        i += 1
    return None


def _last_code_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- adapters


class Adapter:
    name: str = ""
    stop: tuple[str, ...] = ()
    translation_name: str = ""  # how the translation prompt names the language
    # What a failed assertion leaves in the output; found anywhere in stdout or stderr, the run fails.
    failure_markers: tuple[bytes, ...] = ()

    def generation_prompt(self, problem: Problem) -> str:
        return tag_line(self.name) + problem.prompt

    def translation_prompt(self, source: Problem, target: Problem) -> str:
        src = LANGUAGE_ADAPTERS[source.language]
        return (f"code translation\n{src.translation_name}:\n{source.declaration}{source.canonical_solution}\n"
                f"{self.translation_name}:\n{target.declaration}")

    def target_prefix(self, problem: Problem, mode: str) -> str:
        """The text the completion follows: the prompt (generation) or the declaration (translation)."""
        return problem.declaration if mode == "translation" else problem.prompt

    def postprocess(self, completion: str, prefix: str, tc: Toolchain | None = None) -> tuple[str, bool]:
        """(the completion cut where the function ends, whether it ends at all)."""
        raise NotImplementedError

    def wrong_completion(self, problem: Problem) -> str:
        """A deliberately wrong body (returns the type's empty value) that a test must reject."""
        raise NotImplementedError

    def program(self, problem: Problem, completion: str, mode: str, tc: Toolchain) -> Program:
        raise NotImplementedError

    def classify(self, step: Step, returncode: int, stdout: str, stderr: str, found: list[str]) -> str:
        """The outcome of a finished (not timed-out) step that did not pass; `found`: the failure markers
        seen anywhere in its output."""
        raise NotImplementedError


class PythonAdapter(Adapter):
    name = "Python"
    translation_name = "Python"
    stop = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\nassert ", "\n@")
    failure_markers = (b"AssertionError",)
    # Syntax and undefined-name errors are the paper's "Syntax/Semantic Error"; a TypeError is a runtime error
    # in a dynamic language (most often a wrong value reaching the test, e.g. None - 0.5).
    _semantic = ("SyntaxError", "IndentationError", "TabError", "NameError", "UnboundLocalError", "ImportError",
                 "ModuleNotFoundError")

    def postprocess(self, completion: str, prefix: str, tc: Toolchain | None = None) -> tuple[str, bool]:
        lines = completion.split("\n")
        kept = []
        for i, line in enumerate(lines):
            if i > 0 and line.strip() and not line[0].isspace():
                break  # SPEC §8: stop at the first non-indented line
            kept.append(line)
        body = "\n".join(kept).rstrip() + "\n"
        if not body.strip():
            return "", False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                complete = codeop.compile_command(prefix + body + "\n\n", "<sample>", "exec") is not None
            except (SyntaxError, ValueError, OverflowError):
                complete = True  # a syntax error is finished code; execution classes it
        return body, complete

    def wrong_completion(self, problem: Problem) -> str:
        return "    return None\n"

    def program(self, problem: Problem, completion: str, mode: str, tc: Toolchain) -> Program:
        """The test in one process (python_test.py, the job on stdin), the candidate in another
        (python_candidate.py loading main.py: imports + prompt + completion)."""
        imports = "\n".join(PYTHON_IMPORTS) + "\n"
        prefix = self.target_prefix(problem, mode)
        job = {"prelude": imports + prefix, "test": problem.test, "entry_point": python_entry_point(problem),
               "candidate": "main.py"}
        harness, binds, folder = python_harness_files(tc)
        argv = python_module_argv(tc, folder, "python_test", "main()")
        return Program({"main.py": imports + prefix + completion + "\n", **harness},
                       [Step("run", argv, stdin=json.dumps(job))], binds)

    def classify(self, step: Step, returncode: int, stdout: str, stderr: str, found: list[str]) -> str:
        last = _last_exception_line(stderr)
        if last.startswith("AssertionError"):
            return WRONG_ANSWER
        if any(last.startswith(e) for e in self._semantic):
            return COMPILE_ERROR
        return RUNTIME_ERROR


def python_entry_point(problem: Problem) -> str:
    """The function the test checks: the argument of the test's last `check(...)` call."""
    calls = re.findall(r"^check\(\s*([A-Za-z_]\w*)\s*\)", problem.test, re.MULTILINE)
    if not calls:
        raise ValueError(f"{problem.task_id}: its test has no `check(<function>)` call")
    return calls[-1]


def _last_exception_line(stderr: str) -> str:
    for line in reversed(stderr.strip().splitlines()):
        if line and not line[0].isspace():
            return line.strip()
    return ""


class BraceAdapter(Adapter):
    open_depth = 1    # brace depth at the end of the prompt
    close_depth = 0   # depth at which the function is closed
    suffix = ""       # appended after the closed function (Java closes its class)

    def normalize(self, completion: str, tc: Toolchain | None) -> str:
        """The completion as the compiler reads it before tokens (C++ trigraphs, Java unicode escapes)."""
        return completion

    def postprocess(self, completion: str, prefix: str, tc: Toolchain | None = None) -> tuple[str, bool]:
        completion = self.normalize(completion, tc)
        end = close_braces(completion, self.open_depth, self.close_depth, self.name)
        if end is None:
            return completion, False
        return completion[:end] + self.suffix + "\n", True


# C++'s trigraphs, replaced before anything else in ISO modes up to C++14 (-std=c++11 is CodeGeeX's).
TRIGRAPHS = {"??=": "#", "??/": "\\", "??'": "^", "??(": "[", "??)": "]", "??!": "|", "??<": "{", "??>": "}",
             "??-": "~"}
_DEFINE = re.compile(r"(?:#|%:)[ \t]*(?:/\*.*?\*/[ \t]*)*define[ \t]+(?:/\*.*?\*/[ \t]*)*([A-Za-z_]\w*)", re.S)
_ASSERT_INCLUDE = re.compile(r"^[ \t]*#[ \t]*(?:include[ \t]*[<\"](?:assert\.h|cassert)[>\"]|undef[ \t]+NDEBUG)"
                             r"[ \t]*$", re.MULTILINE)
# The C++ test's own main and assert, routed to harness/cm_harness.cpp (the names it defines).
CPP_HARNESS_NAMES = ("assert", "main", "cm_test_main", "cm_assert_hit", "NDEBUG")


def cpp_macro_names(code: str) -> list[str]:
    """Every name a `#define` (or `%:define`, `??=define`) in the code defines, lines spliced first."""
    code = code.replace("\\\n", "")
    for tri, char in TRIGRAPHS.items():
        code = code.replace(tri, char)
    return sorted(set(_DEFINE.findall(code)))


class CppAdapter(BraceAdapter):
    name = "C++"
    translation_name = "C++"
    stop = ("\nint main", "\n#include", "\n/*", "\n//", "\nusing ", "\n\n\n")
    failure_markers = (b"codemill: assertion failed", b"Assertion `")

    def normalize(self, completion: str, tc: Toolchain | None) -> str:
        # ISO modes before C++17 replace trigraphs first (CodeGeeX compiles with -std=c++11).
        if re.fullmatch(r"c\+\+(98|03|11|14)", tc.cpp_std if tc else "c++11"):
            for tri, char in TRIGRAPHS.items():
                completion = completion.replace(tri, char)
        return completion

    def wrong_completion(self, problem: Problem) -> str:
        head = _last_code_line(problem.declaration).lstrip()
        return "    return;\n}\n" if head.startswith("void ") else "    return {};\n}\n"

    def program(self, problem: Problem, completion: str, mode: str, tc: Toolchain) -> Program:
        undo = "".join(f"#undef {name}\n" for name in sorted(set(cpp_macro_names(completion)) | set(CPP_HARNESS_NAMES)))
        test = _ASSERT_INCLUDE.sub("", problem.test)
        text = ("\n".join(CPP_INCLUDES) + "\n" + self.target_prefix(problem, mode) + completion + "\n"
                "// codemill: the sample's macros end here; the test's assert() and main() are the harness's.\n"
                + undo + 'extern "C" void cm_assert_hit(int ok, const char *expr, int line);\n'
                "#define assert(e) (::cm_assert_hit((e) ? 1 : 0, #e, __LINE__))\n"
                "#define main cm_test_main\n" + test + "\n#undef main\n")
        files = {"main.cpp": text}
        harness = tc.cpp_harness_obj
        if harness is None:
            files["cm_harness.cpp"] = harness_file("cm_harness.cpp")
        argv = [tc.gxx, f"-std={tc.cpp_std}", "-o", "main"]
        binds = []
        if tc.cpp_pch_dir:
            argv += ["-include", str(Path(tc.cpp_pch_dir) / "cm_pch.h")]
            binds.append(tc.cpp_pch_dir)
        argv.append("main.cpp")
        if harness:
            argv.append(harness)
            binds.append(str(Path(harness).parent))
        else:
            argv += ["-x", "c++", "cm_harness.cpp"]
        if "openssl" in text:
            argv += ["-lcrypto", "-lssl"]
        return Program(files, [Step("compile", argv), Step("run", ["./main"])], binds,
                       remove_before_run=sorted(files))

    def classify(self, step: Step, returncode: int, stdout: str, stderr: str, found: list[str]) -> str:
        if step.kind == "compile":
            return COMPILE_ERROR
        if found or ("Assertion" in stderr and "failed" in stderr):
            return WRONG_ANSWER
        return RUNTIME_ERROR


# A Java unicode escape: \\uXXXX (any number of u) after an even number of backslashes (JLS 3.3).
_JAVA_UNICODE = re.compile(r"(?<!\\)((?:\\\\)*)\\u+([0-9a-fA-F]{4})")


class JavaAdapter(BraceAdapter):
    name = "Java"
    translation_name = "Java"
    open_depth = 2   # class Solution { ... method {
    close_depth = 1
    suffix = "\n}"
    stop = ("\npublic class Main", "\nclass Main", "\n}")
    failure_markers = (b"AssertionError",)
    _defaults = {"int": "0", "long": "0L", "short": "(short) 0", "byte": "(byte) 0", "double": "0.0",
                 "float": "0.0f", "boolean": "false", "char": "'\\0'"}

    def normalize(self, completion: str, tc: Toolchain | None) -> str:
        # javac reads unicode escapes before anything else, so `\u007d` closes a brace: read them first.
        return _JAVA_UNICODE.sub(lambda m: m.group(1) + chr(int(m.group(2), 16)), completion)

    def wrong_completion(self, problem: Problem) -> str:
        head = _last_code_line(problem.declaration)
        m = re.match(r"\s*(?:public\s+|private\s+|protected\s+|static\s+|final\s+)*(.+?)\s+\w+\s*\(", head)
        ret = m.group(1).strip() if m else "Object"
        body = "return;" if ret == "void" else f"return {self._defaults.get(ret, 'null')};"
        return f"        {body}\n    }}\n}}\n"

    def program(self, problem: Problem, completion: str, mode: str, tc: Toolchain) -> Program:
        test = re.sub(r"\bpublic\s+class\s+Main\b", "class CmTestMain", problem.test, count=1)
        text = self.target_prefix(problem, mode) + completion + "\n" + test
        jvm = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]
        cds = [f"-J-XX:SharedArchiveFile={tc.javac_cds}"] if tc.javac_cds else []
        files = {"Main.java": text}
        if not tc.java_harness_dir:
            files["CmHarness.java"] = harness_file("CmHarness.java")
        javac = [tc.javac, "-encoding", "UTF-8", "-nowarn", "-proc:none", *("-J" + o for o in jvm), *cds,
                 "-J-Xmx512m", *sorted(files)]
        classpath = "." + (f":{tc.java_harness_dir}" if tc.java_harness_dir else "")
        java = [tc.java, "-ea", *jvm, f"-Xmx{tc.java_heap_mb}m", "-cp", classpath, "CmHarness"]
        binds = [str(Path(tc.javac_cds).parent)] if tc.javac_cds else []
        binds += [tc.java_harness_dir] if tc.java_harness_dir else []
        return Program(files, [Step("compile", javac), Step("run", java)], binds, remove_before_run=sorted(files))

    def classify(self, step: Step, returncode: int, stdout: str, stderr: str, found: list[str]) -> str:
        if step.kind == "compile":
            return COMPILE_ERROR
        if found or "java.lang.AssertionError" in stderr:
            return WRONG_ANSWER
        return RUNTIME_ERROR


class JavaScriptAdapter(BraceAdapter):
    name = "JavaScript"
    translation_name = "JavaScript"
    stop = ("\nconst ", "\nfunction ", "\n/*", "\n//", "\nconsole.", "\nmodule.", "\n\n\n")
    # console.assert prints "Assertion failed" and the process still exits 0 (SPEC §8).
    failure_markers = (b"Assertion failed",)
    _semantic = ("SyntaxError", "ReferenceError")

    def wrong_completion(self, problem: Problem) -> str:
        return "  return undefined;\n}\n"

    def program(self, problem: Problem, completion: str, mode: str, tc: Toolchain) -> Program:
        """The program on standard input (no file to read the test from): the prologue, prompt + completion,
        then the test in a strict function of its own, its console.assert calls counted by the harness."""
        test = re.sub(r"\bconsole\s*\.\s*assert\b", "__cm.assert", problem.test)
        text = (harness_file("prologue.js") + self.target_prefix(problem, mode) + completion + "\n"
                "(function () {\n'use strict';\n" + test + "\n})();\n__cm.finish();\n")
        env = {"NODE_PATH": tc.node_modules} if tc.node_modules else {}
        binds = [tc.node_modules] if tc.node_modules else []
        argv = [tc.node, "-"]
        return Program({}, [Step("run", argv, env, stdin=text)], binds)

    def classify(self, step: Step, returncode: int, stdout: str, stderr: str, found: list[str]) -> str:
        if returncode == 0 or found or "AssertionError" in stderr:
            return WRONG_ANSWER
        for line in stderr.splitlines():
            if any(line.startswith(e) for e in self._semantic):
                return COMPILE_ERROR
        return RUNTIME_ERROR


class GoAdapter(BraceAdapter):
    name = "Go"
    translation_name = "Go"
    stop = ("\nfunc ", "\n//", "\n/*", "\ntype ", "\nvar ", "\n\n\n")
    failure_markers = (b"--- FAIL", b"--- SKIP")

    def wrong_completion(self, problem: Problem) -> str:
        head = _last_code_line(problem.declaration)
        ret = _go_result_type(head)
        if not ret:
            return "    return\n}\n"
        if ret.startswith("("):
            parts = _split_top(ret[1:-1])
            if all(len(p.split()) >= 2 for p in parts):
                return "    return\n}\n"  # named results
            decls = "".join(f"    var z{i} {p}\n" for i, p in enumerate(parts))
            return decls + "    return " + ", ".join(f"z{i}" for i in range(len(parts))) + "\n}\n"
        return f"    var zero {ret}\n    return zero\n}}\n"

    def program(self, problem: Problem, completion: str, mode: str, tc: Toolchain) -> Program:
        prefix = self.target_prefix(problem, mode)
        if problem.import_ and problem.import_ in prefix:
            prefix = prefix.replace(problem.import_, "", 1)
        code = prefix + completion
        bare = _strip_go_comments_and_strings(code + "\n" + problem.test)  # the test may use a package too
        candidates = list(dict.fromkeys(re.findall(r'"([^"]+)"', problem.import_) + list(GO_HELPER_PACKAGES)))
        used = [p for p in candidates if f'"{p}"' not in problem.test_setup
                and re.search(r"\b" + re.escape(p.split("/")[-1]) + r"\.", bare)]
        imports = ("import (\n" + "".join(f'    "{p}"\n' for p in used) + ")\n") if used else ""
        text = problem.test_setup + "\n" + imports + "\n" + code + "\n" + problem.test
        env = {"GO111MODULE": "off", "GOPATH": tc.gopath, "GOCACHE": "{work}/.gocache", "CGO_ENABLED": "0",
               "GOPROXY": "off", "GOFLAGS": "", "GOTOOLCHAIN": "local", "GOTELEMETRY": "off"}
        steps = [Step("compile", [tc.go, "test", "-c", "-vet=off", "-ldflags=-s -w", "-o", "main.test"], env),
                 Step("run", ["./main.test", "-test.count=1", "-test.paniconexit0", "-test.v"])]
        files = {"main_test.go": text, "cm_harness_test.go": harness_file("cm_harness_test.go")}
        return Program(files, steps, [], needs_go_cache=True, remove_before_run=sorted(files))

    def classify(self, step: Step, returncode: int, stdout: str, stderr: str, found: list[str]) -> str:
        if step.kind == "compile":
            return COMPILE_ERROR
        out = stdout + stderr
        if "panic:" in out and "Error Trace" not in out:
            return RUNTIME_ERROR
        if found:
            return WRONG_ANSWER
        return RUNTIME_ERROR


def _strip_go_comments_and_strings(code: str) -> str:
    """Go code with comments and string/rune literals blanked (a package named in a comment is not used)."""
    return re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|`[^`]*`|\'(?:\\.|[^\'\\\n])*\'', " ", code, flags=re.S)


def _go_result_type(head: str) -> str:
    """`func F(a int, b []int) (int, error) {` -> `(int, error)`."""
    start = head.find("(")
    if start < 0:
        return ""
    depth = 0
    for i in range(start, len(head)):
        if head[i] == "(":
            depth += 1
        elif head[i] == ")":
            depth -= 1
            if depth == 0:
                return head[i + 1:].rsplit("{", 1)[0].strip()
    return ""


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in text:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


LANGUAGE_ADAPTERS: dict[str, Adapter] = {a.name: a for a in (PythonAdapter(), CppAdapter(), JavaAdapter(),
                                                              JavaScriptAdapter(), GoAdapter())}


def adapter(language: str) -> Adapter:
    if language not in LANGUAGE_ADAPTERS:
        raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGE_ADAPTERS)}")
    return LANGUAGE_ADAPTERS[language]
