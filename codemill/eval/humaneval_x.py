"""HumanEval-X behind the eval stage's benchmark interface (codemill.eval.benchmark): tasks in five languages,
generation and translation prompts, one execution per sample (codemill.eval.execute), pass@k, pass@k_pi and
the translation matrix, the check's canonical solutions and mutants, calibrated time limits."""

from __future__ import annotations

import functools
import logging
import socket

from codemill.eval import benchmark_check as bc
from codemill.eval import languages as L
from codemill.eval import sandbox
from codemill.eval.benchmark import Environment, item_key
from codemill.eval.config import HUMANEVAL_X_MAX_TOKENS, HUMANEVAL_X_PROBLEMS, EvalConfig, ExecutionConfig
from codemill.eval.execute import exec_limits, execute_sample
from codemill.eval.metrics import compute_metrics
from codemill.eval.samples import Sample, SamplesError, build_jobs, parse_samples, samples_jsonl
from codemill.eval.toolchain import default_toolchain, toolchain_versions
from codemill.humaneval import DATA_DIR, dataset_hash, load_problems, task_id_for

log = logging.getLogger("codemill.eval")

# Slowest to build first, so the last tasks of a run are short ones (longest-processing-time order).
LANGUAGE_COST = {"Java": 0, "Go": 1, "C++": 2, "JavaScript": 3, "Python": 4}
ROW_FIELDS = ("outcome", "passed", "seconds", "compile_seconds", "retried", "stderr", "assertions",
              "memory_peak_bytes")


class HumanEvalX:
    name = "humaneval-x"
    worker = "codemill.eval.humaneval_x:execute_batch"

    def environment(self, config: EvalConfig, unsafe: bool) -> Environment:
        data_dir = config.data_dir or str(DATA_DIR)
        problems = load_problems(None, data_dir)
        tc = default_toolchain(cpp_std=config.execution.cpp_std, prepare=False)
        versions = toolchain_versions(tc)
        dataset = dataset_hash(None, data_dir)
        facts = {"sandboxed": not unsafe, "cpp_std": config.execution.cpp_std}
        fp = bc.fingerprint(versions, dataset, facts)
        limits = exec_limits(config.execution, config.execution.default_time_s).run
        context = {"execution": config.execution.model_dump(mode="json"), "unsafe": unsafe, "fingerprint": fp,
                   "toolchains": versions, "dataset": dataset, "facts": facts}
        return Environment(problems, fp, versions, dataset, sandbox.settings(limits, unsafe), context)

    def selected_units(self, env: Environment, config: EvalConfig) -> list[str]:
        if config.tasks:
            return _known(config.tasks, env.problems)
        numbers = config.problems or list(range(HUMANEVAL_X_PROBLEMS))
        return [task_id_for(lang, n) for lang in config.languages for n in numbers]

    def check_items(self, env: Environment, config: EvalConfig, units: list[str]) -> list[dict]:
        jobs = bc.check_jobs({t: env.problems[t] for t in units}, config.check.mutants_per_task)
        return [self._item(j["task_id"], None, "generation", False, j["completion"], config.execution.default_time_s,
                           env) | {"kind": j["kind"]} for j in jobs]

    def check_verdict(self, rows: list[dict], env: Environment, units: list[str]) -> dict:
        return bc.evaluate(rows, env.fingerprint, units)

    def context(self, env: Environment, items: list[dict]) -> dict:
        return {**env.context, "problems": {t: env.problems[t] for t in {it["task_id"] for it in items}}}

    def read_samples(self, data: bytes, source: str, env: Environment) -> list[Sample]:
        return parse_samples(data.decode("utf-8"), source, known_tasks=set(env.problems))

    def samples_jsonl(self, samples: list[Sample]) -> bytes:
        return samples_jsonl(samples)

    def sample_units(self, samples: list[Sample]) -> list[str]:
        return sorted({s.task_id for s in samples})

    def generate(self, env: Environment, config: EvalConfig, units: list[str], generator) -> list[Sample]:
        numbers = sorted({int(u.rsplit("/", 1)[1]) for u in units})
        languages = [lang for lang in L.LANGUAGES if any(env.problems[u].language == lang for u in units)]
        wanted = set(units)
        jobs = [j for j in build_jobs(env.problems, languages, numbers, config.mode, config.pairs())
                if j.task_id in wanted]
        g = config.generation
        budget = g.max_tokens or HUMANEVAL_X_MAX_TOKENS
        texts = generator.generate([j.prompt for j in jobs], [g.n] * len(jobs), [budget] * len(jobs),
                                   [j.stop for j in jobs], [g.seed + 7919 * i for i in range(len(jobs))])
        return [Sample(j.task_id, text, i, j.source_language) for j, outs in zip(jobs, texts)
                for i, text in enumerate(outs)]

    def score_items(self, samples: list[Sample], env: Environment, config: EvalConfig, check: dict | None
                    ) -> list[tuple[dict, dict]]:
        tasks = self.sample_units(samples)
        e = config.execution
        limits = bc.time_limits(tasks, (check or {}).get("calibration_seconds", {}), e.time_multiple, e.time_floor_s,
                                e.default_time_s)
        out = []
        for s in samples:
            item = self._item(s.task_id, s.source_language, s.mode, e.postprocess, s.completion, limits[s.task_id], env)
            row = {"task_id": s.task_id, "language": env.problems[s.task_id].language, "sample_id": s.sample_id}
            if s.source_language:
                row["source_language"] = s.source_language
            out.append((item, row))
        return out

    def _item(self, task_id: str, source_language: str | None, mode: str, postprocess: bool, completion: str,
              wall_s: float, env: Environment) -> dict:
        return {"key": item_key("humaneval-x", task_id, source_language, mode, postprocess, completion, wall_s),
                "unit": task_id, "cost": LANGUAGE_COST[env.problems[task_id].language], "task_id": task_id,
                "mode": mode, "postprocess": postprocess, "completion": completion, "wall_s": wall_s}

    def batch_bound_s(self, batch: list[dict], config: EvalConfig) -> float:
        e = config.execution
        return sum(e.compile_time_s + 2 * it["wall_s"] + 10.0 for it in batch)

    def metrics(self, rows: list[dict], env: Environment, config: EvalConfig, from_samples: bool) -> dict:
        m = config.metrics
        languages = list(L.LANGUAGES) if from_samples else config.languages
        return compute_metrics(rows, languages, m.k, m.budget_k, m.strategies, m.weights, m.translation_k,
                               m.bootstrap_resamples, m.bootstrap_seed)

    def log_metrics(self, metrics: dict) -> None:
        gen = metrics.get("generation") or {}
        for lang, m in (gen.get("languages") or {}).items():
            values = ", ".join(f"pass@{k} {_pct(v['value'])}" for k, v in m["pass_at_k"].items())
            log.info("eval: %-10s %3d problems, %5d samples: %s", lang, m["problems"], m["samples"], values)
        if gen.get("average"):
            log.info("eval: average    %s", ", ".join(f"pass@{k} {_pct(v)}" for k, v in gen["average"].items()))
        for a in metrics.get("allocation", []):
            log.info("eval: pass@%d_pi %-11s %s  budget %s", a["k"], a["strategy"], _pct(a["value"]), a["budget"])

    def counts(self, metrics: dict) -> dict:
        average = (metrics.get("generation") or {}).get("average") or {}
        return {f"pass@{k}": v for k, v in average.items() if v is not None}

    def write_report(self, out: str, summary: dict) -> None:
        from codemill.eval.report import write_report
        write_report(out, summary)


def _known(tasks: list[str], problems: dict) -> list[str]:
    unknown = [t for t in tasks if t not in problems]
    if unknown:
        raise SamplesError(f"tasks {unknown[:5]} are not HumanEval-X task ids of the data (e.g. CPP/12)")
    return list(dict.fromkeys(tasks))


def _pct(v: float | None) -> str:
    return "undefined (n < k)" if v is None else f"{100 * v:.2f}%"


# ----------------------------------------------------------------------------------- on the workers


def execute_batch(items: list[dict], context: dict) -> list[dict]:
    """Ray-free: execute a batch of items on this node (after checking its toolchains)."""
    cfg = ExecutionConfig.model_validate(context["execution"])
    check_node(context)
    tc = _worker_toolchain(cfg.cpp_std)
    out = []
    for it in items:
        res = execute_sample(context["problems"][it["task_id"]], it["completion"], it["mode"], tc,
                             exec_limits(cfg, it["wall_s"]), context["unsafe"], postprocess=it["postprocess"])
        row = {k: getattr(res, k) for k in ROW_FIELDS}
        row.update(key=it["key"], seconds=round(res.seconds, 4), compile_seconds=round(res.compile_seconds, 4))
        out.append(row)
    return out


def check_node(context: dict) -> None:
    """Refuse to execute on a node whose toolchains (or codemill's code) differ from what the run's benchmark
    check covered."""
    versions, fp = _node_fingerprint(context["execution"]["cpp_std"], context["dataset"],
                                     tuple(sorted(context["facts"].items())))
    if fp != context["fingerprint"]:
        differ = {k: {"driver": context["toolchains"].get(k), "here": v} for k, v in versions.items()
                  if context["toolchains"].get(k) != v}
        raise bc.ToolchainMismatch(
            f"node {socket.gethostname()} executes samples with other toolchains or code than the run was checked "
            f"with (fingerprint {fp} here, {context['fingerprint']} on the driver): "
            + (", ".join(f"{k}: {d['here']!r} here, {d['driver']!r} on the driver" for k, d in differ.items())
               or "the same toolchain versions, so codemill's eval code differs")
            + "; give every node the same image")


@functools.lru_cache(maxsize=4)
def _node_fingerprint(cpp_std: str, dataset: str, facts: tuple) -> tuple[dict, str]:
    versions = toolchain_versions(default_toolchain(cpp_std=cpp_std, prepare=False))
    return versions, bc.fingerprint(versions, dataset, dict(facts))


@functools.lru_cache(maxsize=4)
def _worker_toolchain(cpp_std: str):
    return default_toolchain(cpp_std=cpp_std)
