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
from eval_attacks import ATTACKS, ESCAPES_POSTPROCESSED, GO_ATTACK_IMPORT, MTPB_ATTACKS

from codemill.eval import languages as L
from codemill.eval import mtpb, sandbox
from codemill.eval.config import ExecutionConfig
from codemill.eval.execute import ExecLimits, execute_sample
from codemill.eval.mtpb_benchmark import printing, run_mtpb_program
from codemill.eval.sandbox import Limits
from codemill.eval.toolchain import default_toolchain
from codemill.humaneval import Problem, load_problems

LIMITS = ExecLimits(run=Limits(wall_s=8.0), retry_timeouts=False)



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
