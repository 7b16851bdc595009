"""`codemill eval --benchmark mtpb`: MTPB generated turn by turn (or given as samples), every (sample, test case)
program run in the eval sandbox and scored, metrics and report; or `--check-benchmark`, which checks the scorer
on every test case. Called by codemill.eval.stage, which owns the command line, the manifest and the
benchmark-check gate's storage (codemill.eval.benchmark_check).

The benchmark check: MTPB ships no solutions, so for every test case a program whose last turn prints the
expected value (written as Python writes it) must pass, and one printing a changed value must fail. Its
result is stored per test case (`MTPB/<id>/<test_index>`) under a fingerprint of the sandbox's Python and
its numpy, pandas and scikit-learn, the data and this code; scoring is gated on it as for HumanEval-X.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import time
from collections import Counter
from pathlib import Path

from codemill import storage
from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.eval import mtpb, sandbox
from codemill.eval.config import EvalConfig
from codemill.eval.execute import exec_limits, run_program
from codemill.eval.generate import HTTPGenerator
from codemill.eval.mtpb import MULTI_TURN, SINGLE_TURN, MtpbProblem
from codemill.eval.mtpb_generate import generate_samples
from codemill.eval.mtpb_metrics import compute_mtpb_metrics
from codemill.eval.mtpb_samples import MtpbSample, read_samples, samples_jsonl
from codemill.eval.samples import SamplesError
from codemill.runner import StageRun
from codemill.stages import EVAL_CHECK, EVAL_CHECK_RESULTS, EVAL_RESULTS, EVAL_SAMPLES, EVAL_SUMMARY

log = logging.getLogger("codemill.eval")

HERE = Path(__file__).resolve().parent
HARNESS_FILE = "mtpb_harness.py"
PROGRAM_FILE, EXPECTED_FILE = "program.py", "expected.json"
# What the fingerprint of a check covers: the code that builds, runs and scores the programs.
CODE_FILES = ("mtpb.py", HARNESS_FILE, "execute.py", "sandbox.py", "languages.py")
LIBRARIES = ("numpy", "pandas", "sklearn")
# One thread per BLAS/OpenMP pool, as the reference sets: threads count against the sandbox's process limit.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CHANGED = " (changed)"


def modes_of(config: EvalConfig) -> list[str]:
    return [MULTI_TURN, SINGLE_TURN] if config.mtpb_mode == "both" else [config.mtpb_mode]


def selected_cases(problems: dict[str, MtpbProblem], config: EvalConfig) -> list[tuple[str, int]]:
    ids = [f"{mtpb.TASK_PREFIX}{n}" for n in config.problems] or list(problems)
    return [(tid, t) for tid in ids for t in range(problems[tid].n_tests)]


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


def fingerprint(found: dict[str, str], dataset: str, sandbox_settings: dict) -> str:
    code = hashlib.sha256(b"".join(name.encode() + b"\0" + (HERE / name).read_bytes() for name in CODE_FILES))
    blob = json.dumps({"benchmark": "mtpb", "versions": found, "dataset": dataset, "sandbox": sandbox_settings,
                       "code": code.hexdigest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def missing_files(problems: dict[str, MtpbProblem], data_dir: Path) -> list[dict]:
    """Problems whose prompts read files MTPB does not ship (every program of theirs fails to find them)."""
    out = []
    for p in problems.values():
        absent = [f for f in p.data_files() if not (data_dir / f).is_file()]
        if absent:
            out.append({"task_id": p.task_id, "name": p.name, "files": absent, "test_cases": p.n_tests})
    return out


# ----------------------------------------------------------------------------------- execution


def _run_batch(items: list[dict], exec_cfg: dict, unsafe: bool) -> list[dict]:
    from codemill.eval.config import ExecutionConfig

    cfg = ExecutionConfig.model_validate(exec_cfg)
    harness = (HERE / HARNESS_FILE).read_text()
    limits = exec_limits(cfg, cfg.mtpb_time_s)
    python = L.Toolchain().python
    out = []
    for it in items:
        program = L.Program({PROGRAM_FILE: it["program"], HARNESS_FILE: harness, EXPECTED_FILE: it["expected"]},
                            [L.Step("run", [python, "-I", "-B", HARNESS_FILE, PROGRAM_FILE, EXPECTED_FILE],
                                    dict(THREAD_ENV))])
        res = run_program(program, "Python", limits, unsafe)
        out.append({"key": it["key"], "outcome": res.outcome, "passed": res.passed,
                    "seconds": round(res.seconds, 4), "retried": res.retried, "stderr": res.stderr})
    return out


def execute(samples: list[MtpbSample], problems: dict[str, MtpbProblem], config: EvalConfig, unsafe: bool
            ) -> list[dict]:
    """One result row per sample (its program against its test case), run as Ray tasks over the cluster's CPUs;
    identical programs of the same test case run once."""
    from codemill.raysupport import ensure_ray, gather_keyed_rows

    ray = ensure_ray()
    unique: dict[tuple[str, str], dict] = {}
    keys = []
    for s in samples:
        p = problems[s.task_id]
        item = {"program": s.program(p), "expected": json.dumps(p.expected(s.test_index))}
        keys.append(unique.setdefault((item["program"], item["expected"]), {**item, "key": len(unique)})["key"])
    todo = list(unique.values())
    size = config.execution.batch_size
    remote = ray.remote(_run_batch).options(num_cpus=config.execution.cpus_per_task, max_retries=1)
    exec_cfg = config.execution.model_dump(mode="json")
    pending = [remote.remote(todo[i:i + size], exec_cfg, unsafe) for i in range(0, len(todo), size)]
    by_key = gather_keyed_rows(ray, pending, "MTPB programs", len(samples))
    return [{"task_id": s.task_id, "test_index": s.test_index, "sample_id": s.sample_id, "mode": s.mode,
             "category": problems[s.task_id].category, **by_key[k]} for s, k in zip(samples, keys)]


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


def run_check(run: StageRun, config: EvalConfig, problems: dict[str, MtpbProblem], cases: list[tuple[str, int]],
              unsafe: bool, env: dict, results_file: str = EVAL_RESULTS) -> dict:
    jobs = check_samples(problems, cases)
    started = time.time()
    rows = execute([s for _, s in jobs], problems, config, unsafe)
    seconds = time.time() - started
    for (kind, s), row in zip(jobs, rows):
        row.update(kind=kind, case=mtpb.case_id(s.task_id, s.test_index), completion=s.turns[-1])
    case_ids = [mtpb.case_id(tid, t) for tid, t in cases]
    # The shared verdict logic reads `task_id` as the checked unit: here, a test case.
    verdict_rows = [{**r, "task_id": r["case"]} for r in rows]
    result = bc.evaluate(verdict_rows, env["fingerprint"], case_ids)
    result.pop("calibration_seconds")  # MTPB's limit is fixed (execution.mtpb_time_s), not calibrated
    result.update({"benchmark": "mtpb", "seconds": round(seconds, 1), "executions": len(rows),
                   "needs_missing_files": env["needs_missing_files"], **env})
    storage.write_bytes(run.path(results_file), b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n"
                                                         for r in rows))
    storage.write_json(run.path(EVAL_CHECK), result)
    cached = bc.merge_and_save(verdict_rows, env["fingerprint"], case_ids, env)
    log.info("eval: MTPB benchmark check %s in %.0f s (%d executions): %d/%d test cases pass with the expected "
             "value printed; cannot pass %s; pass with a changed value %s; need files MTPB does not ship %s; "
             "stored in %s", "PASSED" if result["ok"] else "FAILED", seconds, len(rows), result["canonical_passed"],
             len(case_ids), [u["task_id"] for u in result["unexpected_failures"]],
             [u["task_id"] for u in result["tests_that_cannot_fail"]],
             [m["task_id"] for m in env["needs_missing_files"]], bc.cache_file(env["fingerprint"]))
    if not cached["ok"]:
        log.warning("eval: the machine's merged MTPB check (%d test cases) is FAILING", len(cached["checked_tasks"]))
    return {"test_cases": len(case_ids), "executions": len(rows), "canonical_passed": result["canonical_passed"],
            "unexpected_failures": len(result["unexpected_failures"]), "ok": int(result["ok"]),
            "tests_that_cannot_fail": len(result["tests_that_cannot_fail"])}


# ----------------------------------------------------------------------------------- the body


def body(run: StageRun, config: EvalConfig, args: argparse.Namespace, unsafe: bool, refuse: type[Exception]
         ) -> dict:
    """The MTPB stage body; `refuse` is the stage's exception for a missing benchmark check."""
    data_dir = Path(config.data_dir) if config.data_dir else mtpb.DATA_DIR
    problems = mtpb.load_problems(data_dir)
    unknown = [n for n in config.problems if f"{mtpb.TASK_PREFIX}{n}" not in problems]
    if unknown:
        raise SamplesError(f"problems {unknown} are not in {data_dir / mtpb.DATA_FILE}")
    found = versions(L.Toolchain().python)
    limits = exec_limits(config.execution, config.execution.mtpb_time_s).run
    dataset = mtpb.dataset_hash(data_dir)
    env = {"fingerprint": fingerprint(found, dataset, {"sandboxed": not unsafe}), "toolchains": found,
           "dataset_sha256": dataset, "sandbox": sandbox.settings(limits, unsafe),
           "needs_missing_files": missing_files(problems, data_dir)}
    if args.check_benchmark:
        return run_check(run, config, problems, selected_cases(problems, config), unsafe, env)
    return _score(run, config, args, problems, unsafe, env, refuse)


def _generator(args, config: EvalConfig):
    """A TurnGenerator over the configured source and what closes it."""
    g = config.generation
    if args.endpoint:
        http = HTTPGenerator(args.endpoint, g.model_name, args.api_key_env, g.batch_size, g.concurrency,
                             g.request_timeout_s, g.max_retries, g.n_per_request, g.seed)
        return (lambda prompts, counts, limits, stops, seeds:
                http.generate(prompts, counts, g.temperature, g.top_p, limits, stops)), (lambda: None)
    from codemill.eval.stage import EnginePool, resolve_model

    pool = EnginePool(resolve_model(args.model)[0], config)
    return pool.generate, pool.close


def _score(run: StageRun, config: EvalConfig, args, problems: dict[str, MtpbProblem], unsafe: bool, env: dict,
           refuse: type[Exception]) -> dict:
    if args.samples:
        samples = read_samples(storage.absolute(args.samples), problems)
        cases = sorted({(s.task_id, s.test_index) for s in samples})
    else:
        samples = None  # generated after the gate
        cases = selected_cases(problems, config)
    case_ids = [mtpb.case_id(tid, t) for tid, t in cases]
    ok, why, check = bc.gate(env["fingerprint"], case_ids)
    if not ok and config.benchmark_check == "run_if_missing" and (check is None or check.get("ok")):
        missing = set(case_ids) - set((check or {}).get("checked_tasks", []))
        log.info("eval: running the MTPB benchmark check first for %d test case(s) not yet checked here",
                 len(missing))
        run_check(run, config, problems, [c for c, i in zip(cases, case_ids) if i in missing], unsafe, env,
                  results_file=EVAL_CHECK_RESULTS)
        ok, why, check = bc.gate(env["fingerprint"], case_ids)
    if not ok and not args.ignore_benchmark_check:
        raise refuse(f"refusing to score: {why} (MTPB's check: `codemill eval --benchmark mtpb --check-benchmark`; "
                     "--ignore-benchmark-check overrides this)")
    if not ok:
        log.warning("eval: !!! SCORING WITHOUT A PASSING BENCHMARK CHECK: %s. The results are recorded as "
                    "unverified in summary.json !!!", why)
    if samples is None:
        started = time.time()
        generate, close = _generator(args, config)
        try:
            samples = generate_samples(problems, cases, modes_of(config), config.generation.n, generate,
                                       config.generation.seed)
        finally:
            close()
        log.info("eval: generated %d MTPB samples in %.0f s", len(samples), time.time() - started)
        storage.write_bytes(run.path(EVAL_SAMPLES), samples_jsonl(samples))
    started = time.time()
    rows = execute(samples, problems, config, unsafe)
    seconds = time.time() - started
    m = config.metrics
    metrics = compute_mtpb_metrics(rows, problems, m.k, m.bootstrap_resamples, m.bootstrap_seed)
    scored = {tid for tid, _ in cases}
    summary = {"benchmark": "mtpb", "metrics": metrics, "config": config.model_dump(mode="json"),
               "source": {k: v for k, v in vars(args).items() if k in ("model", "endpoint", "samples", "api_key_env")},
               "samples": len(samples), "executions_seconds": round(seconds, 1),
               "benchmark_check": {"passed": ok, "why_not": why or None, "overridden": bool(not ok)},
               **{**env, "needs_missing_files": [x for x in env["needs_missing_files"] if x["task_id"] in scored]}}
    storage.write_bytes(run.path(EVAL_RESULTS), b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n"
                                                         for r in rows))
    storage.write_json(run.path(EVAL_SUMMARY), summary)
    if config.charts:
        from codemill.eval.mtpb_report import write_report
        write_report(run.out, summary)
    for mode, mm in metrics["modes"].items():
        log.info("eval: MTPB %-11s %3d problems, %5d pairs: pass rate %.2f%%", mode, mm["problems"], mm["pairs"],
                 100 * mm["pass_rate"]["value"])
    outcomes = Counter(r["outcome"] for r in rows)
    rates = {f"pass_rate_{mode.replace('-', '_')}": mm["pass_rate"]["value"]
             for mode, mm in metrics["modes"].items()}
    return {**rates, "samples": len(samples), "passed": outcomes.get(L.PASSED, 0),
            **{f"outcome_{k}": v for k, v in sorted(outcomes.items())}}
