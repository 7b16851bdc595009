"""The eval stage on Ray: `codemill eval` / `python -m codemill.eval`.

    codemill eval --model EXPORT_URI --out URI           generate with codemill's serve engine (Ray actors:
                                                         one per GPU, or on CPU), then execute and score
    codemill eval --endpoint URL [--api-key-env NAME] --out URI   any OpenAI-compatible /v1/completions
    codemill eval --samples FILE.jsonl --out URI         execute and score given samples
    codemill eval --check-benchmark --out URI            the benchmark's own health on this machine
    codemill eval --benchmark mtpb [--mtpb-mode both] …  CodeGen's multi-turn MTPB instead (codemill.eval.mtpb_stage)

Executions are Ray tasks over the cluster's CPUs (a few samples each, the slow languages first, identical
programs run once). Output: samples.jsonl (when generated), results.jsonl, summary.json, charts/*.png and
report.html, or check.json for the benchmark check; `_manifest.json` last (codemill.runner).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import sys
import time
from collections import Counter

from codemill import storage
from codemill.config import ConfigError, StrictModel, load_config
from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.eval import sandbox
from codemill.eval.config import EvalConfig
from codemill.eval.execute import exec_limits, execute_sample
from codemill.eval.generate import GenerationError, HTTPGenerator
from codemill.eval.metrics import compute_metrics
from codemill.eval.mtpb import MtpbDataError
from codemill.eval.samples import PromptJob, Sample, SamplesError, build_jobs, read_samples, samples_jsonl
from codemill.eval.toolchain import default_toolchain, toolchain_versions
from codemill.humaneval import DATA_DIR, dataset_hash, load_problems, task_id_for
from codemill.manifest import MissingInputError
from codemill.runner import StageRun, run_stage, setup_logging
from codemill.stages import (
    EVAL_CHECK,
    EVAL_CHECK_RESULTS,
    EVAL_REPORT,
    EVAL_RESULTS,
    EVAL_SAMPLES,
    EVAL_SUMMARY,
    MANIFEST_FILE,
    TRAIN_EXPORT,
)

log = logging.getLogger("codemill.eval")

STAGE = "eval"
CONFIG_FILE = "config.json"  # an export's (codemill.train.export.CONFIG_FILE, not imported: it needs torch)
SAMPLES_FILE, RESULTS_FILE, SUMMARY_FILE, CHECK_FILE, REPORT_FILE = (
    EVAL_SAMPLES, EVAL_RESULTS, EVAL_SUMMARY, EVAL_CHECK, EVAL_REPORT)
# Slowest to build first, so the last tasks of a run are short ones (longest-processing-time order).
LANGUAGE_COST = {"Java": 0, "Go": 1, "C++": 2, "JavaScript": 3, "Python": 4}


class RefusedToScore(RuntimeError):
    """The benchmark check has not passed on this machine's current fingerprint."""


class EvalRun(StrictModel):
    """What the manifest hashes: the config and where the samples come from (a new source reruns the stage)."""

    config: EvalConfig
    source: dict[str, str]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codemill eval", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="EXPORT_URI", help="a train stage's export/ (or its output folder)")
    src.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible server (…/v1/completions)")
    src.add_argument("--samples", metavar="FILE.jsonl", help="execute and score these samples")
    src.add_argument("--check-benchmark", action="store_true",
                     help="run every canonical and a wrong solution per task; store the result for this machine")
    p.add_argument("--benchmark", choices=("humaneval-x", "mtpb"),
                   help="the benchmark (config key `benchmark`; default humaneval-x)")
    p.add_argument("--mtpb-mode", choices=("multi-turn", "single-turn", "both"),
                   help="MTPB: turn by turn, all prompts at once, or both side by side (config key `mtpb_mode`)")
    p.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the endpoint's API key")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="execute WITHOUT bubblewrap (namespaces off; only rlimits): never on a machine you care about")
    p.add_argument("--ignore-benchmark-check", action="store_true",
                   help="score even though the benchmark check has not passed on this machine (recorded loudly)")
    p.add_argument("--config", help="stage config YAML (defaults are the paper's values)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set generation.n=2 (repeatable)")
    p.add_argument("--out", required=True, help="output URI: a local folder or s3://bucket/prefix")
    p.add_argument("--force", action="store_true", help="run even if the output is already complete")
    return p


def resolve_model(uri: str) -> tuple[str, str | None]:
    """(the export folder, the stage output whose manifest records it): accepts export/ or its train output."""
    uri = storage.absolute(uri)
    if storage.exists(storage.join(uri, MANIFEST_FILE)) and storage.exists(storage.join(uri, TRAIN_EXPORT,
                                                                                         CONFIG_FILE)):
        return storage.join(uri, TRAIN_EXPORT), uri
    parent = uri.rstrip("/").rsplit("/", 1)[0]
    if storage.exists(storage.join(parent, MANIFEST_FILE)):
        return uri, parent
    return uri, None


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parser().parse_args(argv)
    try:
        if args.api_key_env and not args.endpoint:
            raise ConfigError("--api-key-env goes with --endpoint")
        flags = [f"{key}={value}" for key, value in (("benchmark", args.benchmark), ("mtpb_mode", args.mtpb_mode))
                 if value]
        config = load_config(EvalConfig, args.config, [*args.overrides, *flags])
        inputs: dict[str, str] = {}
        if args.check_benchmark:
            source = {"kind": "check-benchmark"}
        elif args.samples:
            uri = storage.absolute(args.samples)
            source = {"kind": "samples", "uri": uri, "sha256": hashlib.sha256(storage.read_bytes(uri)).hexdigest()}
        elif args.endpoint:
            source = {"kind": "endpoint", "url": args.endpoint}
        else:
            export, record = resolve_model(args.model)
            source = {"kind": "model", "export": export}
            if record:
                inputs["model"] = record
        source["sandbox"] = "none" if args.unsafe_no_sandbox else "bubblewrap"
        if args.ignore_benchmark_check:
            source["ignore_benchmark_check"] = "true"
        # A model read from a stage output is identified by that input's fingerprint, so the manifest hashes
        # the config alone, as the DAG runner does; any other source is part of what the output depends on.
        from_stage = source["kind"] == "model" and "model" in inputs and set(source) == {"kind", "export", "sandbox"} \
            and source["sandbox"] == "bubblewrap"
        identity = config if from_stage else EvalRun(config=config, source=source)
        run_stage(STAGE, identity, storage.absolute(args.out),
                  functools.partial(_body, config=config, args=args, source=source), inputs, force=args.force)
    except (ConfigError, MissingInputError, SamplesError, sandbox.SandboxUnavailable, GenerationError,
            RefusedToScore, FileNotFoundError, MtpbDataError) as exc:
        print(f"codemill eval: {exc}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------------------- the body


def _body(run: StageRun, config: EvalConfig, args: argparse.Namespace, source: dict) -> dict:
    unsafe = bool(args.unsafe_no_sandbox)
    if unsafe:
        log.warning("eval: --unsafe-no-sandbox: generated code runs WITHOUT bubblewrap (no namespaces, host "
                    "filesystem and network visible); only rlimits and a private uid apply")
    sandbox.require_sandbox(unsafe)
    if config.benchmark == "mtpb":
        from codemill.eval import mtpb_stage

        return mtpb_stage.body(run, config, args, unsafe, RefusedToScore)
    data_dir = config.data_dir or str(DATA_DIR)
    all_problems = load_problems(None, data_dir)
    numbers = config.problems or list(range(164))
    tc = default_toolchain(cpp_std=config.execution.cpp_std, prepare=False)
    versions = toolchain_versions(tc)
    fp = bc.fingerprint(versions, dataset_hash(None, data_dir), {"sandboxed": not unsafe,
                                                                 "cpp_std": config.execution.cpp_std})
    env = {"fingerprint": fp, "toolchains": versions, "dataset_sha256": dataset_hash(None, data_dir),
           "sandbox": sandbox.settings(exec_limits(config.execution, config.execution.default_time_s).run, unsafe)}
    if args.check_benchmark:
        tasks = [task_id_for(lang, n) for lang in config.languages for n in numbers]
        return _check(run, config, tasks, all_problems, unsafe, env)
    return _score(run, config, args, all_problems, numbers, unsafe, env)


def _check(run: StageRun, config: EvalConfig, tasks: list[str], problems, unsafe: bool, env: dict,
           results_file: str = RESULTS_FILE) -> dict:
    jobs = bc.check_jobs({t: problems[t] for t in tasks})
    items = [{**j, "mode": "generation", "postprocess": False, "wall_s": config.execution.default_time_s}
             for j in jobs]
    started = time.time()
    rows = execute_on_ray(items, problems, config, unsafe)
    seconds = time.time() - started
    result = bc.evaluate(rows, env["fingerprint"], tasks)
    result.update({"seconds": round(seconds, 1), "executions": len(rows), **env})
    storage.write_bytes(run.path(results_file), _jsonl(rows))
    storage.write_json(run.path(CHECK_FILE), result)
    cached = bc.merge_and_save(rows, env["fingerprint"], tasks, env)
    log.info("eval: benchmark check %s in %.0f s (%d executions, %.1f/s): %d/%d canonical solutions pass; "
             "unexpected failures %s; known %s; flaky %s; tests that cannot fail %s; stored in %s",
             "PASSED" if result["ok"] else "FAILED", seconds, len(rows), len(rows) / max(seconds, 1e-9),
             result["canonical_passed"], len(tasks), [u["task_id"] for u in result["unexpected_failures"]],
             [u["task_id"] for u in result["known_failures"]], [u["task_id"] for u in result["flaky"]],
             [u["task_id"] for u in result["tests_that_cannot_fail"]], bc.cache_file(env["fingerprint"]))
    if not cached["ok"]:
        log.warning("eval: the machine's merged benchmark check (%d tasks) is FAILING", len(cached["checked_tasks"]))
    return {"tasks": len(tasks), "executions": len(rows), "canonical_passed": result["canonical_passed"],
            "unexpected_failures": len(result["unexpected_failures"]), "ok": int(result["ok"]),
            "tests_that_cannot_fail": len(result["tests_that_cannot_fail"])}


def _score(run: StageRun, config: EvalConfig, args, problems, numbers: list[int], unsafe: bool, env: dict) -> dict:
    if args.samples:
        samples = read_samples(storage.absolute(args.samples))
        unknown = sorted({s.task_id for s in samples} - set(problems))
        if unknown:
            raise SamplesError(f"{args.samples}: unknown task ids {unknown[:5]}")
    else:
        jobs = build_jobs(problems, config.languages, numbers, config.mode, config.pairs())
        samples = None  # generated after the gate
    tasks = sorted({s.task_id for s in samples} if samples is not None else {j.task_id for j in jobs})
    ok, why, check = bc.gate(env["fingerprint"], tasks)
    if not ok and config.benchmark_check == "run_if_missing" and (check is None or check.get("ok")):
        missing = sorted(set(tasks) - set((check or {}).get("checked_tasks", [])))
        log.info("eval: running the benchmark check first for %d task(s) not yet checked on this machine",
                 len(missing))
        _check(run, config, missing, problems, unsafe, env, results_file=EVAL_CHECK_RESULTS)
        ok, why, check = bc.gate(env["fingerprint"], tasks)
    if not ok and not args.ignore_benchmark_check:
        raise RefusedToScore(f"refusing to score: {why} (--ignore-benchmark-check overrides this)")
    if not ok:
        log.warning("eval: !!! SCORING WITHOUT A PASSING BENCHMARK CHECK: %s. The results are recorded as "
                    "unverified in summary.json !!!", why)
    if samples is None:
        started = time.time()
        samples = generate(jobs, args, config)
        log.info("eval: generated %d samples for %d prompts in %.0f s", len(samples), len(jobs), time.time() - started)
        storage.write_bytes(run.path(SAMPLES_FILE), samples_jsonl(samples))
    limits = bc.time_limits(tasks, (check or {}).get("calibration_seconds", {}), config.execution.time_multiple,
                            config.execution.time_floor_s, config.execution.default_time_s)
    items = [{"task_id": s.task_id, "sample_id": s.sample_id, "source_language": s.source_language,
              "completion": s.completion, "mode": s.mode, "postprocess": config.execution.postprocess,
              "wall_s": limits[s.task_id]} for s in samples]
    started = time.time()
    rows = execute_on_ray(items, problems, config, unsafe)
    seconds = time.time() - started
    m = config.metrics
    metrics = compute_metrics(rows, config.languages if not args.samples else list(L.LANGUAGES), m.k, m.budget_k,
                              m.strategies, m.weights, m.translation_k, m.bootstrap_resamples, m.bootstrap_seed)
    summary = {"metrics": metrics, "config": config.model_dump(mode="json"), "source": {
        k: v for k, v in vars(args).items() if k in ("model", "endpoint", "samples", "api_key_env")},
        "samples": len(samples), "executions_seconds": round(seconds, 1),
        "benchmark_check": {"passed": ok, "why_not": why or None, "overridden": bool(not ok)},
        "time_limits": {"calibrated": bool(check), "multiple": config.execution.time_multiple,
                        "floor_s": config.execution.time_floor_s}, **env}
    storage.write_bytes(run.path(RESULTS_FILE), _jsonl(rows))
    storage.write_json(run.path(SUMMARY_FILE), summary)
    if config.charts:
        from codemill.eval.report import write_report
        write_report(run.out, summary)
    _print_summary(metrics)
    outcomes = Counter(r["outcome"] for r in rows)
    average = (metrics.get("generation") or {}).get("average") or {}
    return {**{f"pass@{k}": v for k, v in average.items() if v is not None},
            "samples": len(samples), "passed": outcomes.get(L.PASSED, 0),
            **{f"outcome_{k}": v for k, v in sorted(outcomes.items())}}


def _print_summary(metrics: dict) -> None:
    gen = metrics.get("generation") or {}
    for lang, m in (gen.get("languages") or {}).items():
        values = ", ".join(f"pass@{k} {_pct(v['value'])}" for k, v in m["pass_at_k"].items())
        log.info("eval: %-10s %3d problems, %5d samples: %s", lang, m["problems"], m["samples"], values)
    if gen.get("average"):
        log.info("eval: average    %s", ", ".join(f"pass@{k} {_pct(v)}" for k, v in gen["average"].items()))
    for a in metrics.get("allocation", []):
        log.info("eval: pass@%d_pi %-11s %s  budget %s", a["k"], a["strategy"], _pct(a["value"]), a["budget"])


def _pct(v: float | None) -> str:
    return "undefined (n < k)" if v is None else f"{100 * v:.2f}%"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


# ----------------------------------------------------------------------------------------- Ray wiring


def _execute_batch(items: list[dict], problems: dict, exec_cfg: dict, unsafe: bool) -> list[dict]:
    from codemill.eval.config import ExecutionConfig

    cfg = ExecutionConfig.model_validate(exec_cfg)
    tc = _worker_toolchain(cfg.cpp_std)
    out = []
    for it in items:
        problem = problems[it["task_id"]]
        res = execute_sample(problem, it["completion"], it["mode"], tc, exec_limits(cfg, it["wall_s"]), unsafe,
                             postprocess=it["postprocess"])
        out.append({"key": it["key"], "outcome": res.outcome, "passed": res.passed, "seconds": round(res.seconds, 4),
                    "compile_seconds": round(res.compile_seconds, 4), "retried": res.retried,
                    "stderr": res.stderr})
    return out


@functools.lru_cache(maxsize=4)
def _worker_toolchain(cpp_std: str):
    return default_toolchain(cpp_std=cpp_std)


def execute_on_ray(items: list[dict], problems: dict, config: EvalConfig, unsafe: bool) -> list[dict]:
    """Run every item (task_id, completion, mode, postprocess, wall_s, …) as Ray tasks; one result row per item
    (identical programs run once: the same task, mode and completion give the same program)."""
    from codemill.raysupport import ensure_ray, gather_keyed_rows

    ray = ensure_ray()
    unique: dict[tuple, dict] = {}
    for it in items:
        key = (it["task_id"], it.get("source_language"), it["mode"], it["postprocess"], it["completion"])
        it["key"] = unique.setdefault(key, {**it, "key": len(unique)})["key"]
    todo = sorted(unique.values(), key=lambda it: (LANGUAGE_COST[L.LANGUAGE_ADAPTERS[problems[it["task_id"]].language]
                                                                 .name], it["key"]))
    size = config.execution.batch_size
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    needed = {it["task_id"] for it in todo}
    problems_ref = ray.put({t: problems[t] for t in needed})
    remote = ray.remote(_execute_batch).options(num_cpus=config.execution.cpus_per_task, max_retries=1)
    exec_cfg = config.execution.model_dump(mode="json")
    pending = [remote.remote(b, problems_ref, exec_cfg, unsafe) for b in batches]
    by_key = gather_keyed_rows(ray, pending, "programs", len(items))
    rows = []
    for it in items:
        r = by_key[it["key"]]
        row = {"task_id": it["task_id"], "language": problems[it["task_id"]].language}
        for k in ("sample_id", "source_language", "kind"):
            if it.get(k) is not None:
                row[k] = it[k]
        row.update(r)
        if it.get("kind"):
            row["completion"] = it["completion"] if it["kind"] == "wrong" else ""
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- generation


def generate(jobs: list[PromptJob], args, config: EvalConfig) -> list[Sample]:
    g = config.generation
    prompts = [j.prompt for j in jobs]
    stops = [j.stop for j in jobs]
    if args.endpoint:
        gen = HTTPGenerator(args.endpoint, g.model_name, args.api_key_env, g.batch_size, g.concurrency,
                            g.request_timeout_s, g.max_retries, g.n_per_request, g.seed)
        texts = gen.generate(prompts, g.n, g.temperature, g.top_p, g.max_tokens, stops)
    else:
        export, _ = resolve_model(args.model)
        texts = generate_with_engines(export, prompts, stops, config)
    return [Sample(j.task_id, text, i, j.source_language) for j, outs in zip(jobs, texts)
            for i, text in enumerate(outs)]


class _EngineActor:
    def __init__(self, export: str, device: str, max_batch_size: int, seed: int):
        from codemill.eval.generate import EngineGenerator

        self.gen = EngineGenerator(export, device=device, max_batch_size=max_batch_size, seed=seed)

    def generate(self, prompts, n, temperature, top_p, max_tokens, stops, seeds):
        return self.gen.generate(prompts, n, temperature, top_p, max_tokens, stops, seeds=seeds)


class EnginePool:
    """codemill's serve engine on Ray actors: one per GPU (continuous batching inside each), or CPU actors when
    the cluster has no GPU; prompts dealt round-robin. Kept across calls (MTPB generates turn by turn)."""

    def __init__(self, export: str, config: EvalConfig):
        from codemill.raysupport import ensure_ray

        self.ray = ensure_ray()
        g = self.g = config.generation
        gpus = float(self.ray.cluster_resources().get("GPU", 0)) if g.device != "cpu" else 0.0
        use_gpu = gpus > 0 and g.gpus_per_actor > 0
        count = g.actors or (max(1, int(gpus // g.gpus_per_actor)) if use_gpu else 1)
        self.device = ("cuda" if use_gpu else "cpu") if g.device == "auto" else g.device
        actor_cls = self.ray.remote(_EngineActor).options(num_gpus=g.gpus_per_actor if use_gpu else 0,
                                                           num_cpus=g.cpus_per_actor)
        self.actors = [actor_cls.remote(export, self.device, g.max_batch_size, g.seed) for _ in range(count)]

    def generate(self, prompts: list[str], n: int | list[int], max_tokens: int | list[int],
                 stops: list[list[str]], seeds: list[int]) -> list[list[str]]:
        """Completions of every prompt (`n` and `max_tokens` for all prompts or one per prompt), one fixed seed
        per prompt, so how prompts are spread over actors does not change what each one samples."""
        from codemill.eval.generate import per_prompt

        ns, limits = per_prompt(n, len(prompts)), per_prompt(max_tokens, len(prompts))
        count = len(self.actors)
        shards = [list(range(a, len(prompts), count)) for a in range(count)]
        refs = [actor.generate.remote([prompts[i] for i in idx], [ns[i] for i in idx], self.g.temperature,
                                      self.g.top_p, [limits[i] for i in idx], [stops[i] for i in idx],
                                      [seeds[i] for i in idx])
                for actor, idx in zip(self.actors, shards) if idx]
        results: list[list[str]] = [[] for _ in prompts]
        for idx, texts in zip([i for i in shards if i], self.ray.get(refs)):
            for i, t in zip(idx, texts):
                results[i] = t
        return results

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def generate_with_engines(export: str, prompts: list[str], stops: list[list[str]], config: EvalConfig
                          ) -> list[list[str]]:
    """Every prompt through codemill's serve engine (EnginePool), n samples each, seeds fixed per prompt."""
    g = config.generation
    pool = EnginePool(export, config)
    log.info("eval: generating %d prompts x %d samples on %d engine actor(s) (%s)", len(prompts), g.n,
             len(pool.actors), pool.device)
    try:
        return pool.generate(prompts, g.n, g.max_tokens, stops, [g.seed + 7919 * i for i in range(len(prompts))])
    finally:
        pool.close()
