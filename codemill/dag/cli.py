"""`codemill dag run|show|status|stop-head`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError
from codemill.dag import state as st
from codemill.dag.jobs import StageFailed
from codemill.dag.plan import decide, plan
from codemill.dag.run import run_dag, stop_head
from codemill.dag.spec import load_dag
from codemill.lease import LeaseHeld


def parse_sets(values: list[str]) -> dict[str, list[str]]:
    """`--set STAGE:key=value` -> {STAGE: ["key=value"]}."""
    out: dict[str, list[str]] = {}
    for v in values:
        if ":" not in v.split("=", 1)[0]:
            raise ConfigError(f"--set {v!r}: in a DAG, name the stage: --set STAGE:key=value")
        stage, rest = v.split(":", 1)
        out.setdefault(stage, []).append(rest)
    return out


def show(dag_path: str, out: str, overrides: dict[str, list[str]] | None = None) -> str:
    """The plan as text: each stage, its config hash, where it reads and writes, and whether it would run."""
    lines = []
    for ps in plan(load_dag(dag_path), Path(dag_path), storage.absolute(out), overrides):
        must_run, why = decide(ps)
        wires = ", ".join(f"{name} <- {ps.spec.inputs[name]}" for name in ps.inputs) or "no inputs"
        lines.append(f"{ps.name:10s} {ps.spec.stage:9s} config {ps.hash}  {wires}  -> {ps.out}\n"
                     f"{'':10s} {'would run' if must_run else 'would skip'}: {why}")
    return "\n".join(lines)


def status(out: str) -> str:
    data = st.read_state(storage.absolute(out))
    if data is None:
        raise ConfigError(f"{out}: no DAG run recorded there (no {st.run_file(out)})")
    counts = {}
    for name in data.get("stages", {}):
        manifest = mf.read_manifest(storage.join(storage.absolute(out), name))
        if manifest is not None:
            counts[name] = manifest.counts
    return st.format_table(data, counts)


def main(argv: list[str] | None = None) -> int:
    from codemill.logs import setup_logging

    setup_logging()
    # The job SDK logs every closed log stream at INFO; the runner says when each stage ends.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(prog="codemill dag", description="run a YAML DAG of codemill stages as Ray jobs")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the DAG's stages as Ray jobs, resume a stopped run")
    r.add_argument("dag", help="a DAG YAML file, e.g. dags/local.yaml")
    r.add_argument("--out", required=True, help="run root: a folder or s3://bucket/prefix; stage N writes OUT/N/")
    r.add_argument("--address", help="a Ray cluster's dashboard URL (http://HOST:8265); default: start a local head")
    r.add_argument("--only", action="append", metavar="STAGE", help="run only this stage (repeatable)")
    r.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and the stages below it")
    r.add_argument("--until", metavar="STAGE", help="run this stage and the stages above it")
    r.add_argument("--force", action="append", metavar="STAGE", help="run this stage even if complete (repeatable)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local head (default: all)")
    r.add_argument("--keep-head", action="store_true",
                   help="leave the local head (and its dashboard) up after the run, to browse its jobs and logs")
    s = sub.add_parser("show", help="validate a DAG and print its plan (what would run, and why)")
    s.add_argument("dag")
    s.add_argument("--out", default="runs/plan")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE")
    t = sub.add_parser("status", help="the state of a run: each stage's status, job, attempt, time and counts")
    t.add_argument("out")
    k = sub.add_parser("stop-head", help="stop the local head a --keep-head run left up")
    k.add_argument("out")
    args = p.parse_args(argv)
    try:
        if args.cmd == "show":
            print(show(args.dag, args.out, parse_sets(args.sets)))
        elif args.cmd == "status":
            print(status(args.out))
        elif args.cmd == "stop-head":
            print("stopped" if stop_head(storage.absolute(args.out)) else "no local head of that run is running")
        else:
            ran = run_dag(args.dag, args.out, args.address, args.only, parse_sets(args.sets), args.num_cpus,
                          args.force, args.start, args.until, args.keep_head)
            print(f"dag {args.dag}: done; ran {', '.join(ran) or 'nothing (all stages complete)'}; "
                  f"outputs under {args.out}")
        return 0
    except (ConfigError, StageFailed, mf.MissingInputError, LeaseHeld) as exc:
        print(f"codemill dag: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("codemill dag: interrupted; running jobs were stopped. Run the same command again to resume.",
              file=sys.stderr)
        return 130
