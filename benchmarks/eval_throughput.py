"""Eval execution throughput: HumanEval-X's canonical solutions (all 820 by default), sandboxed, executed as the
eval stage executes samples (Ray tasks over this machine's CPUs), by the code of this checkout ("new") and,
in alternation in the same window, by an earlier commit's ("old", a git worktree made for the run), each on a
fresh local Ray of its own (Ray's start is not timed). What the new code adds per execution: a cgroup, the
read-only root and size-limited /dev/shm, the proof of a pass (a key on fd 3, the harness around the test, the
whole output read), Python's test and candidate in two processes, JavaScript's frozen objects, the node
toolchain check, results written as batches finish.

    bash scripts/in-netns.sh .venv/bin/python benchmarks/eval_throughput.py --old-rev 2a9c1b3 --rounds 2
    bash scripts/in-netns.sh .venv/bin/python benchmarks/eval_throughput.py --smoke   # seconds: 5 programs, new code

Both sides must get the same outcomes (every canonical solution passes but the documented ones); the machine's
load average is recorded before and after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]

# Run inside a fresh interpreter whose sys.path starts with the tree under test (its Ray workers inherit it).
RUNNER = r'''
import json, os, sys, time
from collections import Counter
per_language, cpus = int(sys.argv[1]), int(sys.argv[2])
import ray
ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
from codemill.eval.config import EvalConfig
from codemill.eval.execute import ExecLimits, ensure_go_cache
from codemill.eval.toolchain import default_toolchain
from codemill.humaneval import load_problems
problems = {t: p for t, p in load_problems().items() if p.number < per_language}
config = EvalConfig()
tc = default_toolchain()
ensure_go_cache(tc, ExecLimits(), unsafe=False)  # the machine-level caches, built once, are not timed
try:
    from codemill.eval.fanout import execute_on_ray
    from codemill.eval.humaneval_x import HumanEvalX
    new = True
except ImportError:
    from codemill.eval.stage import execute_on_ray
    new = False
if new:
    bench = HumanEvalX()
    env = bench.environment(config, unsafe=False)
    items = [bench._item(t, None, "generation", False, p.canonical_solution, config.execution.default_time_s, env)
             for t, p in problems.items()]
    items.sort(key=lambda it: (it["cost"], it["key"]))
    started = time.time()
    rows = execute_on_ray(items, bench.worker, bench.context(env, items), batch_size=config.execution.batch_size,
                          cpus_per_task=config.execution.cpus_per_task,
                          batch_bound_s=lambda b: bench.batch_bound_s(b, config), what="canonical solutions",
                          on_rows=lambda rows: None)
    seconds = time.time() - started
    by_task = {it["task_id"]: rows[it["key"]] for it in items}
else:
    items = [{"task_id": t, "completion": p.canonical_solution, "mode": "generation", "postprocess": False,
              "wall_s": config.execution.default_time_s} for t, p in problems.items()]
    started = time.time()
    rows = execute_on_ray(items, problems, config, unsafe=False)
    seconds = time.time() - started
    by_task = {r["task_id"]: r for r in rows}
failed = sorted(t for t, r in by_task.items() if not r["passed"])
print(json.dumps({"seconds": seconds, "executions": len(by_task), "failed": failed,
                  "outcomes": dict(Counter(r["outcome"] for r in by_task.values()))}))
'''


def measure(tree: Path, per_language: int, cpus: int) -> dict:
    """One timed run of a tree's executor, in an interpreter of its own."""
    # A private local Ray: no cluster address, no token of another cluster.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    env["PYTHONPATH"] = str(tree)
    load_before = os.getloadavg()
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(per_language), str(cpus)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"the run of {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "seconds": round(result["seconds"], 1), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def old_worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="cm-eval-old-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO, check=True,
                   capture_output=True)
    cache = REPO / ".cache"
    if cache.is_dir():
        (path / ".cache").symlink_to(cache)  # js-md5 where both trees look for it
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/eval_throughput.json")
    ap.add_argument("--per-language", type=int, default=164, help="problems per language (164 = all 820)")
    ap.add_argument("--old-rev", help="the commit to compare with (a worktree is made and removed)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating old, new, old, new")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs each Ray gets")
    ap.add_argument("--smoke", action="store_true", help="one problem per language, one run of this checkout")
    args = ap.parse_args(argv)
    if args.smoke:
        args.per_language, args.rounds, args.old_rev = 1, 1, None
    old = old_worktree(args.old_rev) if args.old_rev else None
    runs: dict[str, list[dict]] = {"new": []} | ({"old": []} if old else {})
    try:
        for round_no in range(args.rounds):
            for side in (["old", "new"] if old else ["new"]):
                result = measure(old if side == "old" else REPO, args.per_language, args.cpus)
                runs[side].append(result)
                print(json.dumps({"round": round_no + 1, "side": side, **result}), flush=True)
    finally:
        if old:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
            shutil.rmtree(old, ignore_errors=True)
    summary = {side: {"median_s": statistics.median(r["seconds"] for r in rs), "runs_s": [r["seconds"] for r in rs],
                      "failed": sorted({t for r in rs for t in r["failed"]})} for side, rs in runs.items()}
    report = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
              "executions": runs["new"][0]["executions"], "cpus": args.cpus, "old_rev": args.old_rev,
              "summary": summary, "runs": runs, "finished_at": time.time()}
    if old:
        report["new_over_old"] = round(summary["new"]["median_s"] / summary["old"]["median_s"], 3)
        report["same_failures"] = summary["new"]["failed"] == summary["old"]["failed"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"summary": summary, "new_over_old": report.get("new_over_old")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
