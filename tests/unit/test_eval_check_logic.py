"""The benchmark check's logic without executing anything: mutants of canonical solutions, the verdict over
several wrong answers per task, toolchain minimums (and the shipped image meeting them), the stop rules'
reading of C++ digraphs/trigraphs and Java unicode escapes, and the C++ harness's undoing of the sample's
macros."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.eval.mutants import CONSTANT_RETURN, OPERATORS, mutants
from codemill.eval.toolchain import MINIMUM_VERSIONS, parse_version, too_old
from codemill.humaneval import load_problems

REPO = Path(__file__).resolve().parents[2]
PROBLEMS = load_problems()


def test_every_task_gets_several_distinct_wrong_answers():
    few = []
    for tid, p in PROBLEMS.items():
        ms = mutants(p, L.adapter(p.language))
        assert ms[0].kind == CONSTANT_RETURN
        assert len({m.completion for m in ms}) == len(ms)
        assert all(m.completion != p.canonical_solution for m in ms)
        assert all(m.kind in OPERATORS for m in ms[1:])
        if len(ms) < 3:
            few.append(tid)
    assert len(few) < 0.2 * len(PROBLEMS), few  # almost every solution has a comparison, constant, ... to change


def test_mutants_change_code_not_strings_or_comments():
    p = PROBLEMS["CPP/0"]
    for m in mutants(p, L.adapter("C++"), limit=50)[1:]:
        assert abs(len(m.completion) - len(p.canonical_solution)) <= 1 and m.change.startswith("line ")
    go = PROBLEMS["Go/0"]
    text = '    s := "a < b"\n    // 1 < 2\n    return len(s) > 0\n}\n'
    ms = mutants(go.__class__(**{**go.__dict__, "canonical_solution": text}), L.adapter("Go"), limit=50)
    assert all('"a < b"' in m.completion and "// 1 < 2" in m.completion for m in ms[1:])
    assert any("len(s) >= 0" in m.completion for m in ms)


def test_python_mutants_stay_python():
    import ast

    for p in PROBLEMS.values():
        if p.language != "Python":
            continue
        for m in mutants(p, L.adapter("Python"), limit=8):
            ast.parse(p.prompt + m.completion)  # every mutant still parses


def test_verdict_lists_every_wrong_answer_a_test_accepted():
    rows = [{"task_id": "CPP/1", "kind": "canonical", "outcome": "passed", "passed": True, "seconds": 0.1},
            {"task_id": "CPP/1", "kind": "constant_return:x", "outcome": "wrong_answer", "passed": False},
            {"task_id": "CPP/1", "kind": "comparison:line 2", "outcome": "passed", "passed": True, "completion": "m"},
            {"task_id": "CPP/2", "kind": "canonical", "outcome": "passed", "passed": True, "seconds": 0.2},
            {"task_id": "CPP/2", "kind": "constant_return:x", "outcome": "wrong_answer", "passed": False}]
    v = bc.evaluate(rows, "fp", ["CPP/1", "CPP/2"])
    assert v["ok"] and v["canonical_passed"] == 2 and v["wrong_answers_tried"] == 3
    assert v["weak_tests"] == [{"task_id": "CPP/1", "wrong_answers_tried": 2,
                                "accepted": [{"kind": "comparison:line 2", "completion": "m"}]}]
    assert bc.weak_tests_of(v, ["CPP/2"]) == [] and bc.weak_tests_of(v, ["CPP/1"]) == v["weak_tests"]
    missing = bc.evaluate(rows[:3], "fp", ["CPP/1", "CPP/2"])
    assert not missing["ok"] and missing["unexpected_failures"] == [{"task_id": "CPP/2", "outcome": "missing"}]


def test_minimum_toolchains_name_what_is_too_old():
    assert parse_version('openjdk version "17.0.15" 2025-04-15') == (17, 0, 15)
    assert parse_version("go version go1.19.8 linux/amd64") == (1, 19, 8)
    ok = {"node": "v20.1.0", "javac": "javac 17.0.2", "java": 'openjdk version "17.0.2"', "go": "go version go1.18.1",
          "python": "Python 3.10.12", "g++": "g++ (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0", "bwrap": "bubblewrap 0.6.1"}
    assert too_old(ok) == []
    old = too_old({**ok, "node": "v12.22.9", "java": 'openjdk version "11.0.20" 2023-07-18',
                   "bwrap": "unavailable ([Errno 2])"})
    assert any(m.startswith("node 12.22.9 is older than 16.6") and "Array.prototype.at" in m for m in old)
    assert any(m.startswith("java 11.0.20 is older than 16") and "Java/136" in m for m in old)
    assert any(m.startswith("bwrap is missing") for m in old)
    assert len(old) == 3


# Ubuntu 22.04's packages the image installs from the distribution (jammy, jammy-updates).
JAMMY = {"go": "1.18.1", "python": "3.10.12", "g++": "11.4.0", "bwrap": "0.6.1"}


def test_the_shipped_image_meets_the_minimums():
    text = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    assert "ubuntu22.04" in text
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    node = (int(args["NODE_MAJOR"]),)
    (jdk,) = {(int(v),) for v in re.findall(r"\sopenjdk-(\d+)-jdk-headless\s", text)}
    assert node >= (17,) or node == (16,)  # NodeSource's 16.x line ended at 16.20 (>= 16.6)
    assert jdk >= MINIMUM_VERSIONS["java"][0] and jdk >= MINIMUM_VERSIONS["javac"][0]
    assert "deb.nodesource.com/node_${NODE_MAJOR}.x" in text
    for tool, version in JAMMY.items():
        assert parse_version(version) >= MINIMUM_VERSIONS[tool][0], tool
    for package in ("bubblewrap", "golang-go", "golang-github-stretchr-testify-dev", "libboost-dev", "libssl-dev",
                    "python3-numpy", "python3-pandas", "python3-sklearn", "util-linux"):
        assert package in text
    assert "default-jdk-headless" not in text and " nodejs npm " not in text


def test_stop_rules_read_what_the_compiler_reads():
    cpp = L.adapter("C++")
    body, finished = cpp.postprocess("    return false;\n%>\nstatic int x = (exit(0), 0);\nbool g() <%\n"
                                     "    return false;\n}\n", "")
    assert finished and "static" not in body
    body, finished = cpp.postprocess("    return false;\n??>\nstatic int y = (exit(0), 0);\nbool h() ??<\n}\n", "")
    assert finished and "static" not in body
    java = L.adapter("Java")
    body, finished = java.postprocess("        return false;\n    \\u007d\n    static { System.exit(0); }\n"
                                      "    boolean u() {\n        return false;\n    }\n}\n", "")
    assert finished and "static" not in body
    assert java.postprocess('        String s = "\\\\u007d";\n        return s.isEmpty();\n    }\n}\n', "")[0] \
        .startswith('        String s = "\\\\u007d"')  # an escaped backslash: no unicode escape


def test_the_cpp_test_cannot_see_the_samples_macros():
    p = PROBLEMS["CPP/0"]
    completion = ("#define assert(x) ((void)0)\n%:define main fake\n#  define /**/ cm_assert_hit(...)\n"
                  "??=define NDEBUG\n    return false;\n}\n")
    assert L.cpp_macro_names(completion) == ["NDEBUG", "assert", "cm_assert_hit", "main"]
    text = L.adapter("C++").program(p, completion, "generation", L.Toolchain()).files["main.cpp"]
    test_part = text.split("// codemill: the sample's macros end here", 1)[1]
    for name in ("assert", "main", "cm_assert_hit", "NDEBUG"):
        assert f"#undef {name}\n" in test_part
    assert "#include<assert.h>" not in test_part and "#define assert(e) (::cm_assert_hit" in test_part


@pytest.mark.parametrize("language", L.LANGUAGES)
def test_compiled_tests_run_without_their_sources_and_js_without_a_file(language):
    p = PROBLEMS[{"Python": "Python/0", "C++": "CPP/0", "Java": "Java/0", "JavaScript": "JavaScript/0",
                  "Go": "Go/0"}[language]]
    program = L.adapter(language).program(p, p.canonical_solution, "generation", L.Toolchain())
    run = [s for s in program.steps if s.kind == "run"]
    assert len(run) == 1
    expected_text = p.test.splitlines()[-1].strip() or p.test.strip().splitlines()[-1]
    readable = [text for name, text in program.files.items() if name not in program.remove_before_run]
    if language == "Python":  # the test travels on the test process's stdin; the candidate's file lacks it
        assert all(expected_text not in t for t in readable if "check(" not in t or t is program.files["main.py"])
        assert "check(" in run[0].stdin and "check(" not in program.files["main.py"]
    elif language == "JavaScript":
        assert program.files == {} and expected_text.split("(")[0] in run[0].stdin
    else:
        assert readable == []
