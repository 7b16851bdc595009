"""MTPB behind the eval stage's benchmark interface (codemill.eval.benchmark): CodeGen's multi-turn problems,
generated turn by turn (or given as samples), every (sample, test case) program run in the sandbox by
harness/mtpb_runner.py, which reports what the program printed last; the expected output stays here and is
compared outside the sandbox (codemill.eval.mtpb_scoring, `mtpb.scoring`: codemill's strict rule or CodeGen's).

The benchmark check: MTPB ships no solutions, so for every test case a program whose last turn prints the
expected value (written as Python writes it) must pass, and one printing a changed value must fail. Under
CodeGen's scoring, test cases whose expected output is a dict or None cannot pass (its rule never accepts
them): they are the check's known failures. Results are stored per test case (`MTPB/<id>/<test_index>`)
under a fingerprint of the sandbox's Python and its numpy, pandas and scikit-learn, the data, the scoring and
this code.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import subprocess
from pathlib import Path

from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.eval import mtpb, sandbox
from codemill.eval.benchmark import Environment, item_key
from codemill.eval.config import EvalConfig, ExecutionConfig
from codemill.eval.execute import Execution, Judge, exec_limits, run_program
from codemill.eval.mtpb import MULTI_TURN, SINGLE_TURN, MtpbProblem
from codemill.eval.mtpb_generate import generate_samples
from codemill.eval.mtpb_metrics import compute_mtpb_metrics
from codemill.eval.mtpb_samples import MtpbSample, parse_samples, samples_jsonl
from codemill.eval.mtpb_scoring import CODEGEN, RECORD_LINE, cannot_pass_in_codegen, read_record, score
from codemill.eval.toolchain import python_harness

log = logging.getLogger("codemill.eval")

PROGRAM_FILE = "program.py"
# What the fingerprint of a check covers: the code that builds, runs and scores the programs.
CODE_FILES = ("mtpb.py", "mtpb_scoring.py", "mtpb_benchmark.py", "harness/mtpb_runner.py", "harness/codec.py",
              "execute.py", "sandbox.py", "cgroups.py", "proof.py", "languages.py")
LIBRARIES = ("numpy", "pandas", "sklearn")
# One thread per BLAS/OpenMP pool, as the reference sets: threads count against the sandbox's process limit.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CHANGED = " (changed)"
CODEGEN_GRACE_S = 5.0  # CodeGen's own alarm fires first; the sandbox's wall limit only after it


def modes_of(config: EvalConfig) -> list[str]:
    return [MULTI_TURN, SINGLE_TURN] if config.mtpb_mode == "both" else [config.mtpb_mode]


def cases_of(units: list[str]) -> list[tuple[str, int]]:
    return [(u.rsplit("/", 1)[0], int(u.rsplit("/", 1)[1])) for u in units]


class Mtpb:
    name = "mtpb"
    worker = "codemill.eval.mtpb_benchmark:execute_batch"

    def environment(self, config: EvalConfig, unsafe: bool) -> Environment:
        data_dir = Path(config.data_dir) if config.data_dir else mtpb.DATA_DIR
        problems = mtpb.load_problems(data_dir)
        unknown = [n for n in config.problems if f"{mtpb.TASK_PREFIX}{n}" not in problems]
        if unknown:
            raise mtpb.MtpbDataError(f"problems {unknown} are not in {data_dir / mtpb.DATA_FILE}")
        found = versions(L.Toolchain().python)
        dataset = mtpb.dataset_hash(data_dir)
        facts = {"sandboxed": not unsafe, "scoring": config.mtpb.scoring}
        fp = fingerprint(found, dataset, facts)
        limits = exec_limits(config.execution, config.execution.mtpb_time_s).run
        cannot = [{"task_id": tid, "test_index": t, "why": why} for tid, p in problems.items()
                  for t in range(p.n_tests) if (why := cannot_pass_in_codegen(p.expected(t)))] \
            if config.mtpb.scoring == CODEGEN else []
        context = {"execution": config.execution.model_dump(mode="json"), "unsafe": unsafe, "fingerprint": fp,
                   "toolchains": found, "dataset": dataset, "facts": facts}
        return Environment(problems, fp, found, dataset, sandbox.settings(limits, unsafe), context,
                           {"needs_missing_files": missing_files(problems, data_dir), "cannot_pass": cannot,
                            "scoring": config.mtpb.scoring})

    def selected_units(self, env: Environment, config: EvalConfig) -> list[str]:
        if config.tasks:
            cases = {mtpb.case_id(tid, t) for tid, p in env.problems.items() for t in range(p.n_tests)}
            unknown = [u for u in config.tasks if u not in cases]
            if unknown:
                raise mtpb.MtpbDataError(f"tasks {unknown[:5]} are not MTPB test cases (MTPB/<id>/<test index>)")
            return list(dict.fromkeys(config.tasks))
        ids = [f"{mtpb.TASK_PREFIX}{n}" for n in config.problems] or list(env.problems)
        return [mtpb.case_id(tid, t) for tid in ids for t in range(env.problems[tid].n_tests)]

    def check_items(self, env: Environment, config: EvalConfig, units: list[str]) -> list[dict]:
        items = []
        for tid, t in cases_of(units):
            p = env.problems[tid]
            for kind, value in (("canonical", p.expected(t)), ("wrong", changed(p.expected(t)))):
                sample = printing(p, t, value, 0 if kind == "canonical" else 1)
                items.append(self._item(sample, p, config) | {"kind": kind, "completion": sample.turns[-1]})
        return items

    def check_verdict(self, rows: list[dict], env: Environment, units: list[str]) -> dict:
        cannot = {mtpb.case_id(c["task_id"], c["test_index"]): c["why"] for c in env.summary_extra["cannot_pass"]}
        verdict = bc.evaluate(rows, env.fingerprint, units, known_failing=cannot)
        verdict.pop("calibration_seconds")  # MTPB's limit is fixed (execution.mtpb_time_s), not calibrated
        return {**verdict, "benchmark": "mtpb", **env.summary_extra}

    def context(self, env: Environment, items: list[dict]) -> dict:
        return env.context

    def read_samples(self, data: bytes, source: str, env: Environment) -> list[MtpbSample]:
        return parse_samples(data.decode("utf-8"), env.problems, source)

    def samples_jsonl(self, samples: list[MtpbSample]) -> bytes:
        return samples_jsonl(samples)

    def sample_units(self, samples: list[MtpbSample]) -> list[str]:
        return sorted({mtpb.case_id(s.task_id, s.test_index) for s in samples})

    def generate(self, env: Environment, config: EvalConfig, units: list[str], generator) -> list[MtpbSample]:
        return generate_samples(env.problems, cases_of(units), modes_of(config), config.generation.n,
                                generator.generate, config.generation.seed, config.generation.max_tokens)

    def score_items(self, samples: list[MtpbSample], env: Environment, config: EvalConfig, check: dict | None
                    ) -> list[tuple[dict, dict]]:
        return [(self._item(s, env.problems[s.task_id], config),
                 {"task_id": s.task_id, "test_index": s.test_index, "sample_id": s.sample_id, "mode": s.mode,
                  "category": env.problems[s.task_id].category}) for s in samples]

    def _item(self, sample: MtpbSample, problem: MtpbProblem, config: EvalConfig) -> dict:
        program = sample.program(problem)
        expected = json.dumps(problem.expected(sample.test_index))
        return {"key": item_key("mtpb", program, expected, config.mtpb.scoring, config.execution.mtpb_time_s),
                "unit": mtpb.case_id(sample.task_id, sample.test_index), "cost": 0, "task_id": sample.task_id,
                "program": program, "expected": expected, "scoring": config.mtpb.scoring}

    def batch_bound_s(self, batch: list[dict], config: EvalConfig) -> float:
        return len(batch) * (2 * (config.execution.mtpb_time_s + CODEGEN_GRACE_S) + 10.0)

    def metrics(self, rows: list[dict], env: Environment, config: EvalConfig, from_samples: bool) -> dict:
        m = config.metrics
        return compute_mtpb_metrics(rows, env.problems, m.k, m.bootstrap_resamples, m.bootstrap_seed)

    def log_metrics(self, metrics: dict) -> None:
        for mode, mm in metrics["modes"].items():
            log.info("eval: MTPB %-11s %3d problems, %5d pairs: pass rate %.2f%%", mode, mm["problems"], mm["pairs"],
                     100 * mm["pass_rate"]["value"])

    def counts(self, metrics: dict) -> dict:
        return {f"pass_rate_{mode.replace('-', '_')}": mm["pass_rate"]["value"]
                for mode, mm in metrics["modes"].items()}

    def write_report(self, out: str, summary: dict) -> None:
        from codemill.eval.mtpb_report import write_report
        write_report(out, summary)


# ----------------------------------------------------------------------------------- environment


def versions(python: str) -> dict[str, str]:
    """The sandbox interpreter's version and its libraries' (what results were computed with)."""
    code = ("import json, sys, importlib\nv = {'python': sys.version.split()[0]}\n"
            f"for name in {list(LIBRARIES)!r}:\n"
            "    try:\n        v[name] = importlib.import_module(name).__version__\n"
            "    except Exception as exc:\n        v[name] = 'missing (' + type(exc).__name__ + ')'\n"
            "print(json.dumps(v))")
    try:
        r = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=120)
        found = json.loads(r.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        found = {"python": f"unavailable ({exc})"}
    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip() \
        if sandbox.bwrap_path() else "missing"
    return {**found, "bwrap": bwrap}


def fingerprint(found: dict[str, str], dataset: str, facts: dict) -> str:
    return bc.fingerprint_of({"benchmark": "mtpb", "versions": found, "dataset": dataset, "sandbox": facts,
                              "code": bc.code_hash(CODE_FILES)})


def missing_files(problems: dict[str, MtpbProblem], data_dir: Path) -> list[dict]:
    """Problems whose prompts read files MTPB does not ship (every program of theirs fails to find them)."""
    out = []
    for p in problems.values():
        absent = [f for f in p.data_files() if not (data_dir / f).is_file()]
        if absent:
            out.append({"task_id": p.task_id, "name": p.name, "files": absent, "test_cases": p.n_tests})
    return out


# ----------------------------------------------------------------------------------- the benchmark check


def changed(value):
    """A value the scorer must reject in place of `value` (an expected output read from JSON)."""
    if value is None:
        return CHANGED.strip()
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + CHANGED
    if isinstance(value, list):
        return [*value, CHANGED]
    if isinstance(value, dict):
        return {**value, CHANGED: CHANGED}
    raise TypeError(f"no changed value for {type(value).__name__}")


def printing(problem: MtpbProblem, test_index: int, value, sample_id: int) -> MtpbSample:
    """A multi-turn sample whose turns are empty but the last, which prints `value` as Python writes it."""
    turns = [""] * (len(problem.prompts) - 1) + [f"print({value!r})"]
    return MtpbSample(problem.task_id, test_index, sample_id, turns, MULTI_TURN)


def check_samples(problems: dict[str, MtpbProblem], cases: list[tuple[str, int]]) -> list[tuple[str, MtpbSample]]:
    """(kind, sample) of the check: `canonical` prints the expected value, `wrong` a changed one."""
    out = []
    for tid, t in cases:
        p = problems[tid]
        out.append(("canonical", printing(p, t, p.expected(t), 0)))
        out.append(("wrong", printing(p, t, changed(p.expected(t)), 1)))
    return out


# ----------------------------------------------------------------------------------- on the workers


def run_mtpb_program(program: str, expected, scoring: str, cfg: ExecutionConfig, unsafe: bool) -> Execution:
    """One program against one expected output: run in the sandbox by the runner, scored here."""
    grace = CODEGEN_GRACE_S if scoring == CODEGEN else 0.0
    limits = exec_limits(cfg, cfg.mtpb_time_s + grace)
    tc = _worker_toolchain()
    harness, binds, folder = L.python_harness_files(tc)
    argv = L.python_module_argv(tc, folder, "mtpb_runner", "main(sys.argv[1:])", scoring, str(cfg.mtpb_time_s),
                                PROGRAM_FILE)
    step = L.Step("run", argv, dict(THREAD_ENV))

    def verdict(step: L.Step, res: sandbox.SandboxResult, key: bytes) -> tuple[str, str, int | None]:
        record = read_record(key, res.captured)
        if record is None:
            outcome = L.adapter("Python").classify(step, res.returncode if res.returncode is not None else -1,
                                                   res.stdout, res.stderr, [])
            if res.returncode == 0:
                return L.RUNTIME_ERROR, "the program ended the process before its value was reported\n", None
            return outcome, "", None
        passed, why = score(record, expected, scoring)
        if passed:
            return L.PASSED, "", 1
        if scoring == CODEGEN and record.get("status") == "raised" and "Timed out" in str(record.get("error")):
            return L.TIMEOUT, f"timed out after {cfg.mtpb_time_s:g} s (CodeGen's alarm): {why}\n", None
        if record.get("status") == "raised":
            return L.RUNTIME_ERROR, f"{record.get('error')}; {why}\n", None
        return L.WRONG_ANSWER, f"AssertionError: {why}\n", None

    return run_program(L.Program({PROGRAM_FILE: program, **harness}, [step], binds), "Python", limits, unsafe,
                       judge=Judge(verdict, (), RECORD_LINE))


@functools.lru_cache(maxsize=1)
def _worker_toolchain() -> L.Toolchain:
    """The sandbox's interpreter with the harness compiled for it once per machine."""
    tc = L.Toolchain()
    tc.python_harness_dir = python_harness(tc.python)
    return tc


def execute_batch(items: list[dict], context: dict) -> list[dict]:
    """Ray-free: run a batch of MTPB programs on this node (after checking its toolchains)."""
    cfg = ExecutionConfig.model_validate(context["execution"])
    check_node(context)
    out = []
    for it in items:
        res = run_mtpb_program(it["program"], json.loads(it["expected"]), it["scoring"], cfg, context["unsafe"])
        out.append({"key": it["key"], "outcome": res.outcome, "passed": res.passed, "seconds": round(res.seconds, 4),
                    "retried": res.retried, "stderr": res.stderr, "memory_peak_bytes": res.memory_peak_bytes})
    return out


def check_node(context: dict) -> None:
    found, fp = _node_fingerprint(context["dataset"], tuple(sorted(context["facts"].items())))
    if fp != context["fingerprint"]:
        differ = ", ".join(f"{k}: {v!r} here, {context['toolchains'].get(k)!r} on the driver"
                           for k, v in found.items() if context["toolchains"].get(k) != v)
        raise bc.ToolchainMismatch(
            f"node {socket.gethostname()} runs MTPB programs with another interpreter, libraries or code than the "
            f"run was checked with: {differ or 'the same versions, so codemill`s eval code differs'}; give every "
            "node the same image")


@functools.lru_cache(maxsize=4)
def _node_fingerprint(dataset: str, facts: tuple) -> tuple[dict, str]:
    found = versions(L.Toolchain().python)
    return found, fingerprint(found, dataset, dict(facts))
