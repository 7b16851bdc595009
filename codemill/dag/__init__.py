"""YAML DAGs of stages, run as Ray jobs: `codemill dag run dags/local.yaml --out DIR [--address URL]`.

spec.py reads and checks a DAG file against the stage registry; plan.py validates every stage's config and
decides, at each stage's turn, whether it must run; jobs.py runs one stage as a Ray job; run.py schedules
the stages (in parallel where the wires allow, with retries, leases and run state); cli.py is the command.
"""

from codemill.dag.cli import main, parse_sets, show, status
from codemill.dag.jobs import StageFailed
from codemill.dag.plan import PlannedStage, decide, entrypoint, plan
from codemill.dag.run import run_dag, sigterm_as_exit
from codemill.dag.spec import Dag, DagStage, load_dag, topological_order

__all__ = ["Dag", "DagStage", "PlannedStage", "StageFailed", "decide", "entrypoint", "load_dag", "main",
           "parse_sets", "plan", "run_dag", "show", "sigterm_as_exit", "status", "topological_order"]
