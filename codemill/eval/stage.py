"""The eval stage: `codemill eval` / `python -m codemill.eval` (flags declared in codemill/stages.py).

    codemill eval --model EXPORT_URI --out URI           generate with codemill's serve engine (Ray actors:
                                                         one per GPU, or on CPU), then execute and score
    codemill eval --endpoint URL [--api-key-env NAME] --out URI   any OpenAI-compatible /v1/completions
    codemill eval --samples FILE.jsonl --out URI         execute and score given samples
    codemill eval --check-benchmark --out URI            the benchmark's own health on this machine
    codemill eval --benchmark mtpb [--mtpb-mode both] …  CodeGen's multi-turn MTPB instead of HumanEval-X

One body for both benchmarks (codemill.eval.benchmark): the environment and its fingerprint; the benchmark
check, or the samples (read, or generated after the gate); the gate; every execution as Ray tasks
(codemill.eval.fanout), written as batches finish so that a rerun resumes (codemill.eval.partial); metrics,
summary.json and report.html. Output: samples.jsonl (when generated), results.jsonl, summary.json,
charts/*.png and report.html, or check.json for the benchmark check; `_manifest.json` last (codemill.runner).
Samples whose execution was lost (`infrastructure_error`) are counted, not scored, and retried by a plain
rerun (the manifest says complete_with_failures).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

from codemill import storage
from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.eval import sandbox
from codemill.eval.benchmark import Benchmark, Environment
from codemill.eval.config import EvalConfig
from codemill.eval.fanout import execute_on_ray
from codemill.eval.generate import GenerationError
from codemill.eval.mtpb import MtpbDataError
from codemill.eval.partial import PartialResults
from codemill.eval.samples import SamplesError
from codemill.eval.toolchain import too_old
from codemill.runner import StageInputError, StageRun
from codemill.stages import (
    EVAL_CHECK,
    EVAL_CHECK_RESULTS,
    EVAL_PARTIAL,
    EVAL_RESULTS,
    EVAL_SAMPLES,
    EVAL_SUMMARY,
)

log = logging.getLogger("codemill.eval")

# What the user can fix: the command says so and exits with 2 (no traceback).
USER_ERRORS = (SamplesError, sandbox.SandboxUnavailable, GenerationError, MtpbDataError, bc.ToolchainTooOld,
               bc.ToolchainMismatch, FileNotFoundError)


class RefusedToScore(RuntimeError):
    """The benchmark check has not passed on this machine's current fingerprint."""


def main(argv: list[str] | None = None) -> int:
    """`codemill eval ...` for callers that run it in-process (the registry's stage command line)."""
    from codemill.runner import stage_main

    return stage_main("eval", argv)


def benchmark_for(config: EvalConfig) -> Benchmark:
    if config.benchmark == "mtpb":
        from codemill.eval.mtpb_benchmark import Mtpb
        return Mtpb()
    from codemill.eval.humaneval_x import HumanEvalX
    return HumanEvalX()


def body(run: StageRun) -> dict:
    config: EvalConfig = run.config
    unsafe = bool(run.flags.get("unsafe_no_sandbox"))
    if run.flags.get("api_key_env") and not run.flags.get("endpoint"):
        raise StageInputError("--api-key-env goes with --endpoint")
    if unsafe:
        log.warning("eval: --unsafe-no-sandbox: generated code runs WITHOUT bubblewrap (no namespaces, host "
                    "filesystem and network visible); only cgroups, rlimits and a private uid apply")
    try:
        sandbox.require_sandbox(unsafe)
        bench = benchmark_for(config)
        env = bench.environment(config, unsafe)
        if run.flags.get("check_benchmark"):
            return check(run, bench, env, bench.selected_units(env, config), EVAL_RESULTS)
        return score(run, bench, env)
    except (*USER_ERRORS, RefusedToScore) as exc:
        raise StageInputError(str(exc)) from exc


# ----------------------------------------------------------------------------------------- the check


def check(run: StageRun, bench: Benchmark, env: Environment, units: list[str], results_file: str) -> dict:
    """The benchmark check of `units`: written to check.json and `results_file`, merged into the machine's
    cache (what the gate reads)."""
    config: EvalConfig = run.config
    old = too_old(env.toolchains) if bench.name == "humaneval-x" else []
    if old:
        raise bc.ToolchainTooOld("the benchmark check cannot pass with these toolchains: " + "; ".join(old))
    items = bench.check_items(env, config, units)
    started = time.time()
    rows, programs = execute(run, bench, env, items, [{"task_id": it["unit"], "kind": it["kind"]} for it in items],
                             "check")
    seconds = time.time() - started
    for it, row in zip(items, rows):
        if it["kind"] != bc.CANONICAL:
            row["completion"] = it.get("completion", "")
    result = bench.check_verdict(rows, env, units)
    known = {k["task_id"]: k["reason"] for k in result.get("known_failures", [])}
    result.update({"seconds": round(seconds, 1), "executions": len(rows), **_environment_facts(env)})
    storage.write_bytes(run.path(results_file), _jsonl(rows))
    storage.write_json(run.path(EVAL_CHECK), result)
    cached = bc.merge_and_save(rows, env.fingerprint, units, _environment_facts(env),
                               known if bench.name == "mtpb" else None)
    weak = result["weak_tests"]
    log.info("eval: %s benchmark check %s in %.0f s (%d executions): %d/%d canonical answers pass; unexpected "
             "failures %s; known %s; flaky %s; tests that accept a wrong answer: %d %s; stored in %s", bench.name,
             "PASSED" if result["ok"] else "FAILED", seconds, len(rows), result["canonical_passed"], len(units),
             [u["task_id"] for u in result["unexpected_failures"]], [u["task_id"] for u in result["known_failures"]],
             [u["task_id"] for u in result["flaky"]], len(weak), [w["task_id"] for w in weak],
             bc.cache_file(env.fingerprint))
    if not cached["ok"]:
        log.warning("eval: the machine's merged benchmark check (%d units) is FAILING", len(cached["checked_tasks"]))
    infra = sum(1 for r in rows if r["outcome"] == L.INFRASTRUCTURE_ERROR)
    if not infra:  # nothing to resume: a standalone check leaves no partial/ behind
        PartialResults(run.path(EVAL_PARTIAL, "check") if results_file == EVAL_CHECK_RESULTS
                       else run.path(EVAL_PARTIAL), "").remove()
    return {"units": len(units), "executions": len(rows), "canonical_passed": result["canonical_passed"],
            "unexpected_failures": len(result["unexpected_failures"]), "ok": int(result["ok"]),
            "weak_tests": len(weak), "infrastructure_errors": infra, **programs}


def _environment_facts(env: Environment) -> dict:
    return {"fingerprint": env.fingerprint, "toolchains": env.toolchains, "dataset_sha256": env.dataset_sha256,
            "sandbox": env.sandbox}


# ----------------------------------------------------------------------------------------- scoring


def score(run: StageRun, bench: Benchmark, env: Environment) -> dict:
    config: EvalConfig = run.config
    flags = run.flags
    samples = None
    if flags.get("samples"):
        samples = bench.read_samples(storage.read_bytes(flags["samples"]), flags["samples"], env)
        units = bench.sample_units(samples)
    else:
        units = bench.selected_units(env, config)
    ok, why, stored = gate(run, bench, env, units)
    if samples is None:
        samples = generated_samples(run, bench, env, units)
    items_rows = bench.score_items(samples, env, config, stored)
    started = time.time()
    rows, programs = execute(run, bench, env, [it for it, _ in items_rows], [row for _, row in items_rows], "score")
    seconds = time.time() - started
    scored = [r for r in rows if r["outcome"] != L.INFRASTRUCTURE_ERROR]
    infra = len(rows) - len(scored)
    metrics = bench.metrics(scored, env, config, from_samples=bool(flags.get("samples")))
    weak = bc.weak_tests_of(stored, units)
    summary = {"benchmark": bench.name, "metrics": metrics, "config": config.model_dump(mode="json"),
               "source": {k: v for k, v in flags.items() if k in ("endpoint", "samples", "api_key_env")}
               | ({"model": run.inputs["model"]} if run.inputs.get("model") else {}),
               "samples": len(samples), "executions_seconds": round(seconds, 1), **programs,
               "infrastructure_errors": infra,
               "benchmark_check": {"passed": ok, "why_not": why or None, "overridden": bool(not ok)},
               "weak_tests": weak, **_environment_facts(env), **_scored_extra(env, units)}
    if bench.name == "humaneval-x":
        summary["time_limits"] = {"calibrated": bool(stored), "multiple": config.execution.time_multiple,
                                  "floor_s": config.execution.time_floor_s}
    storage.write_bytes(run.path(EVAL_RESULTS), _jsonl(rows))
    storage.write_json(run.path(EVAL_SUMMARY), summary)
    if config.charts:
        bench.write_report(run.out, summary)
    bench.log_metrics(metrics)
    if weak:
        log.warning("eval: %d scored task(s) have tests that accepted a wrong answer in the benchmark check: %s",
                    len(weak), [w["task_id"] for w in weak][:20])
    if infra:
        log.warning("eval: %d sample(s) were not executed (%s): not scored; run the stage again to execute them",
                    infra, L.INFRASTRUCTURE_ERROR)
    else:
        PartialResults(run.path(EVAL_PARTIAL), "").remove()
    outcomes = Counter(r["outcome"] for r in rows)
    return {**bench.counts(metrics), "samples": len(samples), "passed": outcomes.get(L.PASSED, 0),
            "infrastructure_errors": infra, **programs, **{f"outcome_{k}": v for k, v in sorted(outcomes.items())}}


def _scored_extra(env: Environment, units: list[str]) -> dict:
    """The benchmark's facts about the scored units (MTPB: problems needing files it does not ship, test cases
    CodeGen's rule cannot pass)."""
    tasks = {u.rsplit("/", 1)[0] if u.count("/") > 1 else u for u in units}
    out = {}
    for key, value in env.summary_extra.items():
        out[key] = [x for x in value if x.get("task_id") in tasks] if isinstance(value, list) else value
    return out


def gate(run: StageRun, bench: Benchmark, env: Environment, units: list[str]) -> tuple[bool, str, dict | None]:
    """(may score, why not, the stored check): refuses unless the check passed here for these units; with
    benchmark_check=run_if_missing, checks the missing units first."""
    config: EvalConfig = run.config
    ok, why, stored = bc.gate(env.fingerprint, units)
    if not ok and config.benchmark_check == "run_if_missing" and (stored is None or stored.get("ok")):
        missing = sorted(set(units) - set((stored or {}).get("checked_tasks", [])))
        log.info("eval: running the benchmark check first for %d unit(s) not yet checked on this machine",
                 len(missing))
        check(run, bench, env, missing, EVAL_CHECK_RESULTS)
        ok, why, stored = bc.gate(env.fingerprint, units)
    if not ok and not run.flags.get("ignore_benchmark_check"):
        hint = " --benchmark mtpb" if bench.name == "mtpb" else ""
        raise RefusedToScore(f"refusing to score: {why} (the check: `codemill eval{hint} --check-benchmark --out "
                             "URI`; --ignore-benchmark-check overrides this)")
    if not ok:
        log.warning("eval: !!! SCORING WITHOUT A PASSING BENCHMARK CHECK: %s. The results are recorded as "
                    "unverified in summary.json !!!", why)
    return ok, why, stored


def generated_samples(run: StageRun, bench: Benchmark, env: Environment, units: list[str]) -> list:
    """The samples of an earlier run of this identity that finished generating (a rerun after a kill), or
    new ones from the endpoint or the model."""
    marker = run.path(EVAL_PARTIAL, "_samples_identity.json")
    if storage.exists(marker) and storage.exists(run.path(EVAL_SAMPLES)):
        if json.loads(storage.read_bytes(marker)).get("identity") == run.identity:
            samples = bench.read_samples(storage.read_bytes(run.path(EVAL_SAMPLES)), run.path(EVAL_SAMPLES), env)
            log.info("eval: resuming with the %d samples an earlier run of this config generated", len(samples))
            return samples
    from codemill.eval.generation import open_generation

    generator = open_generation(run.inputs.get("model"), run.flags.get("endpoint"), run.flags.get("api_key_env"),
                                run.config)
    started = time.time()
    try:
        samples = bench.generate(env, run.config, units, generator)
    finally:
        generator.close()
    log.info("eval: generated %d samples in %.0f s", len(samples), time.time() - started)
    storage.write_bytes(run.path(EVAL_SAMPLES), bench.samples_jsonl(samples))
    storage.write_json(marker, {"identity": run.identity})
    return samples


# ----------------------------------------------------------------------------------------- execution


def execute(run: StageRun, bench: Benchmark, env: Environment, items: list[dict], rows_of: list[dict],
            phase: str) -> tuple[list[dict], dict[str, int]]:
    """One result row per item (its `rows_of` fields and its execution's), in order, and how many distinct
    programs were executed and reused: identical programs run once, and what an earlier run of this identity
    and phase already executed is not executed again."""
    config: EvalConfig = run.config
    store = PartialResults(run.path(EVAL_PARTIAL, phase), f"{run.identity}:{phase}")
    done = store.load()
    unique: dict[str, dict] = {}
    for it in items:
        if it["key"] not in done:
            unique.setdefault(it["key"], it)
    todo = sorted(unique.values(), key=lambda it: (it["cost"], it["key"]))
    reused = len({it["key"] for it in items} & set(done))
    if done:
        log.info("eval: resuming: %d of %d distinct programs already executed by an earlier run; executing %d",
                 reused, len({it["key"] for it in items}), len(todo))
    new = execute_on_ray(todo, bench.worker, bench.context(env, todo), batch_size=config.execution.batch_size,
                         cpus_per_task=config.execution.cpus_per_task,
                         batch_bound_s=lambda batch: bench.batch_bound_s(batch, config),
                         what=f"{bench.name} {phase} executions", on_rows=store.add,
                         node_labels=config.execution.node_labels)
    store.flush()
    results = {**done, **new}
    out = []
    for it, extra in zip(items, rows_of):
        row = {k: v for k, v in results[it["key"]].items() if k != "key"}
        out.append({**extra, **row})
    return out, {"programs_executed": len(todo), "programs_reused": reused}


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
