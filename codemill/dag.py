"""Run a YAML DAG of stages as Ray jobs: `codemill dag run dags/local.yaml --out DIR [--address URL]`.

Each stage is submitted through Ray's job submission API (so it shows in the dashboard's Jobs view, with
its logs) to the cluster at `--address`, or to a local head this command starts itself with its dashboard
and token authentication on. Stage configs are validated before anything is submitted; a stage whose
output is already complete for its config and input is not submitted again, which is how a stopped run
resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError, StrictModel, build_config, config_hash, read_yaml
from codemill.stages import STAGES

log = logging.getLogger("codemill.dag")

JOB_POLL_S = 1.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class DagStage(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    stage: str
    input: str | None = None                  # the name of an earlier stage of this DAG
    config: dict[str, Any] = Field(default_factory=dict)
    config_file: str | None = None            # relative to the DAG file; `config` keys override it
    entrypoint_num_cpus: float = 0.0          # the job driver only orchestrates; work runs in tasks/workers
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("stage")
    @classmethod
    def known_stage(cls, v: str) -> str:
        if v not in STAGES:
            raise ValueError(f"unknown stage {v!r}; known stages: {', '.join(STAGES)}")
        return v


class Dag(StrictModel):
    name: str
    description: str = ""
    stages: list[DagStage]

    @model_validator(mode="after")
    def inputs_come_first(self) -> Dag:
        seen: set[str] = set()
        for st in self.stages:
            if st.name in seen:
                raise ValueError(f"stage name {st.name!r} is used twice")
            spec = STAGES[st.stage]
            if spec.inputs and not st.input:
                raise ValueError(f"stage {st.name!r} ({st.stage}) needs `input:` naming an earlier stage")
            if st.input and st.input not in seen:
                raise ValueError(f"stage {st.name!r}: input {st.input!r} is not an earlier stage of this DAG "
                                 f"(earlier: {sorted(seen) or 'none'})")
            seen.add(st.name)
        return self


@dataclass
class PlannedStage:
    spec: DagStage
    config: Any
    out: str
    input_uri: str | None
    config_uri: str
    hash: str


def dag_variables(dag_path: str | Path) -> dict[str, str]:
    """`${NAME}` in a DAG's string values expands to these (then to the environment)."""
    import sysconfig
    return {"CODEMILL_SITE_PACKAGES": sysconfig.get_paths()["purelib"], "CODEMILL_CWD": os.getcwd(),
            "CODEMILL_DAG_DIR": str(Path(dag_path).resolve().parent)}


def _expand(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, sub in variables.items():
            value = value.replace("${" + name + "}", sub)
        return os.path.expandvars(value)
    if isinstance(value, list):
        return [_expand(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables) for k, v in value.items()}
    return value


def load_dag(path: str | Path) -> Dag:
    return build_config(Dag, _expand(read_yaml(path), dag_variables(path)), source=str(path))


def plan(dag: Dag, dag_path: Path, out: str, overrides: dict[str, list[str]] | None = None) -> list[PlannedStage]:
    """Validate every stage's config (before any work starts) and decide where each writes."""
    planned = []
    for st in dag.stages:
        data: dict[str, Any] = {}
        if st.config_file:
            data = _expand(read_yaml(dag_path.parent / st.config_file), dag_variables(dag_path))
        data = _deep_merge(data, st.config)
        model = STAGES[st.stage].load_config_model()
        cfg = build_config(model, data, (overrides or {}).get(st.name), source=f"{dag_path} (stage {st.name})")
        stage_out = storage.join(out, st.name)
        planned.append(PlannedStage(st, cfg, stage_out, storage.join(out, st.input) if st.input else None,
                                    storage.join(out, "_dag", f"{st.name}.yaml"), config_hash(cfg)))
    return planned


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def is_complete(ps: PlannedStage) -> bool:
    existing = mf.read_manifest(ps.out)
    if ps.input_uri is None:
        return mf.is_up_to_date(existing, ps.hash, {})
    upstream = mf.read_manifest(ps.input_uri)
    if upstream is None or upstream.status != mf.STATUS_COMPLETE:
        return False
    return mf.is_up_to_date(existing, ps.hash, {"input": mf.input_record(ps.input_uri, upstream)})


def entrypoint(ps: PlannedStage) -> str:
    spec = STAGES[ps.spec.stage]
    parts = ["python", "-m", spec.module, "--config", ps.config_uri, "--out", ps.out]
    if ps.input_uri:
        parts += ["--input", ps.input_uri]
    return " ".join(_quote(p) for p in parts)


def _quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


@dataclass
class JobRunner:
    """Submits one stage at a time and follows it to the end, printing its log as it grows."""

    dashboard_url: str
    client: Any = field(init=False)

    def __post_init__(self) -> None:
        from ray.job_submission import JobSubmissionClient
        self.client = JobSubmissionClient(self.dashboard_url)

    def run(self, ps: PlannedStage, dag_name: str) -> None:
        submission_id = f"codemill-{dag_name}-{ps.spec.name}-{ps.hash[:8]}-{int(time.time())}"
        env = {"PYTHONUNBUFFERED": "1", **ps.spec.env}
        for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                    "TORCH_EXTENSIONS_DIR"):
            if key in os.environ and key not in env:
                env[key] = os.environ[key]
        job_id = self.client.submit_job(
            entrypoint=entrypoint(ps), submission_id=submission_id,
            runtime_env={"env_vars": env}, entrypoint_num_cpus=ps.spec.entrypoint_num_cpus,
            metadata={"codemill_dag": dag_name, "codemill_stage": ps.spec.name, "config_hash": ps.hash})
        log.info("stage %s: submitted as Ray job %s (%s/#/jobs/%s)", ps.spec.name, job_id, self.dashboard_url, job_id)
        asyncio.run(self._follow_logs(job_id, ps.spec.name))
        status = self._wait_terminal(job_id)
        if status != "SUCCEEDED":
            info = self.client.get_job_info(job_id)
            raise StageFailed(f"stage {ps.spec.name} ended {status}: {info.message or ''}\n"
                              f"logs: ray job logs {job_id} --address {self.dashboard_url}")


    async def _follow_logs(self, job_id: str, stage: str) -> None:
        """Print the job's log as it grows; returns when the job ends (or the log stream closes)."""
        async for chunk in self.client.tail_job_logs(job_id):
            for line in chunk.splitlines():
                print(f"[{stage}] {line}", flush=True)

    def _wait_terminal(self, job_id: str) -> str:
        while True:
            status = self.client.get_job_status(job_id).value
            if status in TERMINAL:
                return status
            time.sleep(JOB_POLL_S)


class StageFailed(RuntimeError):
    pass


def run_dag(dag_path: str, out: str, address: str | None = None, only: list[str] | None = None,
            overrides: dict[str, list[str]] | None = None, num_cpus: int | None = None) -> list[str]:
    """Run the DAG; returns the names of the stages that ran (complete ones are skipped)."""
    dag_file = Path(dag_path)
    out = storage.absolute(out)
    dag = load_dag(dag_file)
    planned = plan(dag, dag_file, out, overrides)
    if only:
        unknown = set(only) - {p.spec.name for p in planned}
        if unknown:
            raise ConfigError(f"--only {sorted(unknown)}: not stages of {dag_path} "
                              f"({', '.join(p.spec.name for p in planned)})")
        planned = [p for p in planned if p.spec.name in only]
    for ps in planned:
        storage.write_bytes(ps.config_uri, yaml.safe_dump(ps.config.model_dump(mode="json"), sort_keys=False).encode())
    todo = [ps for ps in planned if not is_complete(ps)]
    for ps in planned:
        if ps not in todo:
            log.info("stage %s: complete for this config and input, skipped", ps.spec.name)
    if not todo:
        return []
    head = None
    # SIGTERM (a job scheduler, `kill`) must still run the `finally` below that stops our local head.
    signal.signal(signal.SIGTERM, _raise_system_exit)
    if address is None:
        from codemill.raycluster import LocalRayHead
        head = LocalRayHead(num_cpus=num_cpus, token_file=_default_token_file())
        log.info("starting a local Ray head (dashboard and token auth on)")
        head.start()
        os.environ.update({k: v for k, v in head.env().items() if k != "RAY_ADDRESS"})
        address = head.dashboard_url
        log.info("Ray dashboard: %s (token in %s)", address, head.token_path)
    try:
        runner = JobRunner(address)
        ran = []
        for ps in todo:
            started = time.time()
            runner.run(ps, dag.name)
            log.info("stage %s: done in %.1f s", ps.spec.name, time.time() - started)
            ran.append(ps.spec.name)
        return ran
    finally:
        if head is not None:
            head.stop()


def _raise_system_exit(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _default_token_file() -> Path:
    """The token of the local head: the user's own Ray token file if they have one, else ~/.ray/auth_token."""
    env_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(env_path) if env_path else Path.home() / ".ray" / "auth_token"


def parse_sets(values: list[str]) -> dict[str, list[str]]:
    """`--set STAGE:key=value` -> {STAGE: ["key=value"]}."""
    out: dict[str, list[str]] = {}
    for v in values:
        if ":" not in v.split("=", 1)[0]:
            raise ConfigError(f"--set {v!r}: in a DAG, name the stage: --set STAGE:key=value")
        stage, rest = v.split(":", 1)
        out.setdefault(stage, []).append(rest)
    return out


def main(argv: list[str] | None = None) -> int:
    from codemill.runner import setup_logging

    setup_logging()
    p = argparse.ArgumentParser(prog="codemill dag", description="run a YAML DAG of codemill stages as Ray jobs")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="submit the DAG's stages in order, watch them, resume a stopped run")
    r.add_argument("dag", help="a DAG YAML file, e.g. dags/local.yaml")
    r.add_argument("--out", required=True, help="run root: a folder or s3://bucket/prefix; stage N writes OUT/N/")
    r.add_argument("--address", help="a Ray cluster's dashboard URL (http://HOST:8265); default: start a local head")
    r.add_argument("--only", action="append", help="run only this stage (repeatable)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local head (default: all)")
    s = sub.add_parser("show", help="validate a DAG and print its plan")
    s.add_argument("dag")
    s.add_argument("--out", default="runs/plan")
    args = p.parse_args(argv)
    try:
        if args.cmd == "show":
            for ps in plan(load_dag(args.dag), Path(args.dag), args.out):
                print(f"{ps.spec.name:10s} {ps.spec.stage:9s} config {ps.hash}  -> {ps.out}"
                      + (f"  (input {ps.input_uri})" if ps.input_uri else ""))
            return 0
        ran = run_dag(args.dag, args.out, args.address, args.only, parse_sets(args.sets), args.num_cpus)
        print(f"dag {args.dag}: done; ran {ran or 'nothing (all stages complete)'}; outputs under {args.out}")
        return 0
    except (ConfigError, StageFailed, mf.MissingInputError) as exc:
        print(f"codemill dag: {exc}", file=sys.stderr)
        return 2
