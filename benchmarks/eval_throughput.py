"""Eval execution throughput: all 820 HumanEval-X canonical solutions, sandboxed (bubblewrap), on this machine.

Two runners over the same programs and the same sandbox, side by side:
- codemill: the eval stage's executor (`execute_on_ray`): Ray tasks over the cluster's CPUs, slow languages
  first, the machine-level compile caches (C++ precompiled header, prebuilt Go build cache linked per sample,
  javac class-data-sharing archive), `go test -c -vet=off` then the test binary;
- baseline: how CodeGeeX's harness runs them: one sample after another, one process per step, its commands
  (`g++ -std=c++11 … -lcrypto -lssl` without a precompiled header, `javac Main.java` + `java -ea -cp . Main`
  with the JDK's defaults, `go test` with vet, `node`, `python3`). Its Go build cache is warm too (CodeGeeX
  relies on the machine's ~/.cache/go-build; here the same prebuilt cache is linked in), so the baseline is
  not charged for compiling the standard library and testify on every sample.

Both results are checked for the same outcomes (every canonical solution passes but the documented ones).

    bash scripts/in-netns.sh .venv/bin/python benchmarks/eval_throughput.py --out benchmarks/results/eval_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

from codemill.eval import languages as L
from codemill.eval.config import EvalConfig
from codemill.eval.execute import ExecLimits, exec_limits, run_program
from codemill.eval.languages import Program, Step
from codemill.eval.toolchain import default_toolchain, toolchain_versions
from codemill.humaneval import load_problems


def baseline_program(problem, tc) -> Program:
    """The program codemill builds, run with CodeGeeX's harness commands instead of codemill's."""
    a = L.adapter(problem.language)
    prog = a.program(problem, problem.canonical_solution, "generation", tc)
    if problem.language == "C++":
        argv = ["g++", "-std=c++11", "main.cpp", "-o", "main"]
        if "openssl" in prog.files["main.cpp"]:
            argv += ["-lcrypto", "-lssl"]
        prog.steps, prog.ro_binds = [Step("compile", argv), Step("run", ["./main"])], []
    elif problem.language == "Java":
        prog.steps = [Step("compile", ["javac", "Main.java"]), Step("run", ["java", "-ea", "-cp", ".", "Main"])]
        prog.ro_binds = []
    elif problem.language == "Go":
        env = prog.steps[0].env
        prog.steps = [Step("run", ["go", "test"], env)]  # compiles (with vet) and runs in one step
    return prog


def run_baseline(problems: dict, limits: ExecLimits, wall_for_go: float) -> tuple[float, list[dict]]:
    tc = default_toolchain()  # the Go build cache and node_modules are the machine's (see the docstring)
    plain = default_toolchain()
    plain.cpp_pch_dir = plain.javac_cds = None
    rows = []
    started = time.time()
    for tid, p in problems.items():
        lim = limits
        if p.language == "Go":  # compile and run are one step: give it the compile limit
            from dataclasses import replace
            lim = replace(limits, run=replace(limits.run, wall_s=wall_for_go))
        res = run_program(baseline_program(p, plain), p.language, lim, tc=tc)
        rows.append({"task_id": tid, "outcome": res.outcome, "passed": res.passed})
    return time.time() - started, rows


def run_stage(problems: dict) -> tuple[float, list[dict]]:
    from codemill.eval.stage import execute_on_ray
    from codemill.raysupport import ensure_ray

    ensure_ray()
    config = EvalConfig()
    items = [{"task_id": tid, "completion": p.canonical_solution, "mode": "generation", "postprocess": False,
              "wall_s": config.execution.default_time_s} for tid, p in problems.items()]
    started = time.time()
    rows = execute_on_ray(items, problems, config, unsafe=False)
    return time.time() - started, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/eval_throughput.json")
    ap.add_argument("--per-language", type=int, default=164, help="problems per language (164 = all 820)")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    problems = {t: p for t, p in load_problems().items() if p.number < args.per_language}
    tc = default_toolchain()
    # Warm the machine-level caches once (both runners use the Go cache) so neither run pays for them.
    from codemill.eval.execute import ensure_go_cache
    ensure_go_cache(tc, ExecLimits(), unsafe=False)
    result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                          "load_average_before": os.getloadavg()},
              "toolchains": toolchain_versions(tc), "samples": len(problems), "started_at": time.time()}
    stage_s, stage_rows = run_stage(problems)
    result["stage"] = {"seconds": round(stage_s, 1), "executions_per_s": round(len(problems) / stage_s, 3),
                       "outcomes": dict(Counter(r["outcome"] for r in stage_rows))}
    print(json.dumps(result["stage"]), flush=True)
    if not args.skip_baseline:
        limits = exec_limits(EvalConfig().execution, EvalConfig().execution.default_time_s)
        base_s, base_rows = run_baseline(problems, limits, EvalConfig().execution.compile_time_s)
        result["baseline_sequential"] = {"seconds": round(base_s, 1),
                                         "executions_per_s": round(len(problems) / base_s, 3),
                                         "outcomes": dict(Counter(r["outcome"] for r in base_rows))}
        result["speedup"] = round(base_s / stage_s, 2)
        differ = sorted(r["task_id"] for r, b in zip(sorted(stage_rows, key=lambda r: r["task_id"]),
                                                       sorted(base_rows, key=lambda r: r["task_id"]))
                        if r["passed"] != b["passed"])
        result["outcome_differences"] = differ
        print(json.dumps(result["baseline_sequential"]), "speedup", result["speedup"], "differ", differ, flush=True)
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
