"""Run a YAML DAG of stages as Ray jobs: `codemill dag run dags/local.yaml --out DIR [--address URL]`.

Each stage is submitted through Ray's job submission API (so it shows in the dashboard's Jobs view, with
its logs) to the cluster at `--address`, or to a local head this command starts itself with its dashboard
and token authentication on. Every stage's config and every wire between stages is validated before
anything is submitted. Whether a stage must run is decided when its turn comes, against its inputs as their
stages just left them: a rerun upstream makes every stage below it run again; a complete stage is skipped,
which is how a stopped run resumes. The log says why each stage runs or is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, NonNegativeFloat, field_validator, model_validator

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError, StrictModel, build_config, config_hash, read_yaml
from codemill.runner import InputError, check_paths
from codemill.secrets import REDACTED, is_secret_name, redact_url
from codemill.stages import STAGES, StageSpec

log = logging.getLogger("codemill.dag")

JOB_POLL_S = 1.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
DAG_STATE_DIR = "_dag"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class DagStage(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    stage: str
    input: str | None = None                  # shorthand for `inputs: {input: <stage>}`
    inputs: dict[str, str] = Field(default_factory=dict)  # input name (as the registry declares) -> stage name
    config: dict[str, Any] = Field(default_factory=dict)
    config_file: str | None = None            # relative to the DAG file; `config` keys override it
    entrypoint_num_cpus: NonNegativeFloat | None = None  # default: the registry's resources for the stage
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("stage")
    @classmethod
    def known_stage(cls, v: str) -> str:
        if v not in STAGES:
            raise ValueError(f"unknown stage {v!r}; known stages: {', '.join(STAGES)}")
        return v

    @field_validator("env")
    @classmethod
    def no_secrets_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        # A job's runtime env is shown in the dashboard to everyone who can open it.
        secret = sorted(k for k in env if is_secret_name(k))
        if secret:
            raise ValueError(f"env {secret}: secrets must not go in a job's runtime env (the Ray dashboard shows it); "
                             f"set them on every node instead (README: Security)")
        return env

    @model_validator(mode="before")
    @classmethod
    def one_way_to_name_inputs(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("input") is not None:
            if data.get("inputs"):
                raise ValueError("give either `input:` or `inputs:`, not both")
            data = {**data, "inputs": {"input": data["input"]}}
            data.pop("input")
        return data

    @property
    def spec(self) -> StageSpec:
        return STAGES[self.stage]


class Dag(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    stages: list[DagStage] = Field(min_length=1)

    @model_validator(mode="after")
    def wires_are_sound(self) -> Dag:
        names = [st.name for st in self.stages]
        for name in {n for n in names if names.count(n) > 1}:
            raise ValueError(f"stage name {name!r} is used twice")
        by_name = {st.name: st for st in self.stages}
        for st in self.stages:
            declared = {i.name: i for i in st.spec.inputs}
            for input_name, upstream in st.inputs.items():
                if input_name not in declared:
                    raise ValueError(f"stage {st.name!r} ({st.stage}): unknown input {input_name!r}; "
                                     f"{st.stage} takes {sorted(declared) or 'no inputs'}")
                if upstream not in by_name:
                    raise ValueError(f"stage {st.name!r}: input {input_name!r} names {upstream!r}, which is not a "
                                     f"stage of this DAG ({', '.join(names)})")
                allowed = declared[input_name].stages
                if by_name[upstream].stage not in allowed:
                    raise ValueError(f"stage {st.name!r}: input {input_name!r} reads a {'/'.join(allowed)} stage's "
                                     f"output, but {upstream!r} is a {by_name[upstream].stage} stage")
            for missing in [i.name for i in st.spec.inputs if i.required and i.name not in st.inputs]:
                raise ValueError(f"stage {st.name!r} ({st.stage}) needs input {missing!r}: add "
                                 f"`inputs: {{{missing}: <a {'/'.join(declared[missing].stages)} stage>}}`")
        topological_order(self.stages)
        return self


def topological_order(stages: list[DagStage]) -> list[DagStage]:
    """The stages in an order where every input runs first (the file's order among independent ones);
    a cycle is an error that names it."""
    by_name = {st.name: st for st in stages}
    order: list[DagStage] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name):] + [name]
            raise ValueError(f"the stages form a cycle: {' -> '.join(cycle)}")
        state[name] = "visiting"
        for upstream in by_name[name].inputs.values():
            visit(upstream, path + [name])
        state[name] = "done"
        order.append(by_name[name])

    for st in stages:
        visit(st.name, [])
    return order


@dataclass
class PlannedStage:
    spec: DagStage
    config: Any
    out: str
    inputs: dict[str, str]      # input name -> URI
    upstream: dict[str, str]    # input name -> the output URI of the stage that makes it
    config_uri: str
    hash: str

    @property
    def name(self) -> str:
        return self.spec.name


def dag_variables(dag_path: str | Path) -> dict[str, str]:
    """`${NAME}` in a DAG's string values expands to these (then to the environment)."""
    import sysconfig
    return {"CODEMILL_SITE_PACKAGES": sysconfig.get_paths()["purelib"], "CODEMILL_CWD": os.getcwd(),
            "CODEMILL_DAG_DIR": str(Path(dag_path).resolve().parent)}


def _expand(value: Any, variables: dict[str, str], where: str = "") -> Any:
    """`${NAME}`/`$NAME` in strings -> the DAG's variables, then the environment. Variables named like
    secrets are refused: the expanded config is saved with the run and shown in the dashboard."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            if name in variables:
                return variables[name]
            if is_secret_name(name):
                raise ConfigError(f"{where or 'DAG'}: ${{{name}}} looks like a secret; a DAG's configs are saved with "
                                  f"the run, so secrets must not be expanded into them. Set it on every node and "
                                  f"let the stage read it (e.g. source.token_env for GitHub tokens)")
            return os.environ.get(name, m.group(0))
        return _VARIABLE.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    return value


def load_dag(path: str | Path) -> Dag:
    return build_config(Dag, _expand(read_yaml(path), dag_variables(path)), source=str(path))


def plan(dag: Dag, dag_path: Path, out: str, overrides: dict[str, list[str]] | None = None) -> list[PlannedStage]:
    """Validate every stage's config (before any work starts) and decide where each reads and writes,
    in the order the stages run."""
    overrides = overrides or {}
    unknown = set(overrides) - {st.name for st in dag.stages}
    if unknown:
        raise ConfigError(f"--set {sorted(unknown)}: not stages of {dag_path} "
                          f"({', '.join(st.name for st in dag.stages)})")
    planned = []
    for st in topological_order(dag.stages):
        data: dict[str, Any] = {}
        if st.config_file:
            data = _expand(read_yaml(dag_path.parent / st.config_file), dag_variables(dag_path), st.name)
        data = _deep_merge(data, st.config)
        model = st.spec.load_config_model()
        cfg = build_config(model, data, overrides.get(st.name), source=f"{dag_path} (stage {st.name})")
        _refuse_credentials(cfg, f"{dag_path} (stage {st.name})")
        stage_out = storage.join(out, st.name)
        upstream = {name: storage.join(out, up) for name, up in st.inputs.items()}
        inputs = {name: storage.join(uri, st.spec.input(name).folder) if st.spec.input(name).folder else uri
                  for name, uri in upstream.items()}
        try:
            check_paths(stage_out, inputs)
        except InputError as exc:
            raise ConfigError(f"{dag_path} (stage {st.name}): {exc}") from None
        planned.append(PlannedStage(st, cfg, stage_out, inputs, upstream,
                                    storage.join(out, DAG_STATE_DIR, f"{st.name}.yaml"), config_hash(cfg)))
    return planned


def _refuse_credentials(cfg, where: str) -> None:
    """A URL with credentials in a config would be saved with the run; the config must name where the
    secret lives instead (an environment variable on the nodes)."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"))
    if redact_url(text) != text:
        raise ConfigError(f"{where}: a URL holds credentials (user:password@ or token@); the config is saved with "
                          f"the run, so put the secret in an environment variable on every node instead "
                          f"(README: Security). Shown redacted: "
                          + ", ".join(sorted({u for u in redact_url(text).split() if REDACTED + "@" in u})))


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def decide(ps: PlannedStage, force: bool = False) -> tuple[bool, str]:
    """(must run, why), judged against the inputs as they are now."""
    if force:
        return True, "forced"
    records = {}
    for name, uri in ps.upstream.items():
        upstream = mf.read_manifest(uri)
        if upstream is None or not mf.is_usable(upstream):
            return True, f"its input {name!r} (stage {ps.spec.inputs[name]}) is not complete yet"
        records[name] = mf.input_record(ps.inputs[name], upstream)
    return mf.why_stale(mf.read_manifest(ps.out), ps.hash, records)


def entrypoint(ps: PlannedStage) -> str:
    import shlex

    parts = ["python", "-m", ps.spec.spec.module, "--config", ps.config_uri, "--out", ps.out]
    for name, uri in ps.inputs.items():
        parts += [ps.spec.spec.input(name).flag, uri]
    return " ".join(shlex.quote(p) for p in parts)


class StageFailed(RuntimeError):
    pass


@dataclass
class JobRunner:
    """Submits one stage at a time and follows it to the end, printing its log as it grows."""

    dashboard_url: str
    headers: dict[str, str] = field(default_factory=dict)
    client: Any = field(init=False)

    def __post_init__(self) -> None:
        from ray.job_submission import JobSubmissionClient
        self.client = JobSubmissionClient(self.dashboard_url, headers=self.headers or None)

    def run(self, ps: PlannedStage, dag_name: str) -> None:
        submission_id = f"codemill-{dag_name}-{ps.name}-{ps.hash[:8]}-{int(time.time())}"
        env = {"PYTHONUNBUFFERED": "1", **ps.spec.env}
        for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                    "TORCH_EXTENSIONS_DIR"):
            if key in os.environ and key not in env:
                env[key] = os.environ[key]
        resources = ps.spec.spec.resources
        num_cpus = ps.spec.entrypoint_num_cpus
        job_id = self.client.submit_job(
            entrypoint=entrypoint(ps), submission_id=submission_id, runtime_env={"env_vars": env},
            entrypoint_num_cpus=resources.entrypoint_num_cpus if num_cpus is None else num_cpus,
            entrypoint_num_gpus=resources.entrypoint_num_gpus or None,
            metadata={"codemill_dag": dag_name, "codemill_stage": ps.name, "config_hash": ps.hash})
        log.info("stage %s: submitted as Ray job %s (%s/#/jobs/%s)", ps.name, job_id, self.dashboard_url, job_id)
        try:
            asyncio.run(self._follow_logs(job_id, ps.name))
            status = self._wait_terminal(job_id)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): the job must not finish the stage unattended.
            with contextlib.suppress(Exception):
                self.client.stop_job(job_id)
                log.warning("stage %s: stopped Ray job %s", ps.name, job_id)
            raise
        if status != "SUCCEEDED":
            info = self.client.get_job_info(job_id)
            raise StageFailed(f"stage {ps.name} ended {status}: {info.message or ''}\n"
                              f"logs: ray job logs {job_id} --address {self.dashboard_url}")

    async def _follow_logs(self, job_id: str, stage: str) -> None:
        """Print the job's log as it grows; returns when the job ends (or the log stream closes)."""
        async for chunk in self.client.tail_job_logs(job_id):
            for line in chunk.splitlines():
                if not _is_noise(line):
                    print(f"[{stage}] {line}", flush=True)

    def _wait_terminal(self, job_id: str) -> str:
        while True:
            status = self.client.get_job_status(job_id).value
            if status in TERMINAL:
                return status
            time.sleep(JOB_POLL_S)


# Lines of Ray's and DeepSpeed's that repeat without telling a user anything (the stages' own progress and
# summaries are logged by codemill). Filtered here, where a run is watched; the job's full log keeps them.
_NOISE = re.compile("|".join([
    r"PlacementGroupCleaner",
    r"Failed to query Ray Train Controller",
    r"Setting accelerator to CPU",
    r"real_accelerator\.py",
    r"use_push_based_shuffle",
    r"use_polars",
    r"DeprecationWarning",
    r"warnings\.warn\(",
    r"^\s*$",
]))


def _is_noise(line: str) -> bool:
    return bool(_NOISE.search(line))


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While running, SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C, so running jobs are stopped and
    a local head is shut down; the previous handler comes back afterwards."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_dag(dag_path: str, out: str, address: str | None = None, only: list[str] | None = None,
            overrides: dict[str, list[str]] | None = None, num_cpus: int | None = None,
            force: list[str] | None = None) -> list[str]:
    """Run the DAG; returns the names of the stages that ran (complete ones are skipped)."""
    dag_file = Path(dag_path)
    out = storage.absolute(out)
    dag = load_dag(dag_file)
    planned = plan(dag, dag_file, out, overrides)
    names = [p.name for p in planned]
    for option, given in (("--only", only), ("--force", force)):
        unknown = set(given or []) - set(names)
        if unknown:
            raise ConfigError(f"{option} {sorted(unknown)}: not stages of {dag_path} ({', '.join(names)})")
    if only:
        planned = [p for p in planned if p.name in only]
    forced = set(force or [])
    for ps in planned:
        storage.write_bytes(ps.config_uri, yaml.safe_dump(ps.config.model_dump(mode="json"), sort_keys=False).encode())
    with sigterm_as_exit(), _cluster(address, num_cpus) as (dashboard_url, headers):
        runner = None
        ran = []
        for ps in planned:
            must_run, why = decide(ps, ps.name in forced)
            if not must_run:
                log.info("stage %s: skipped (%s)", ps.name, why)
                continue
            log.info("stage %s: runs (%s)", ps.name, why)
            runner = runner or JobRunner(dashboard_url, headers)
            started = time.time()
            runner.run(ps, dag.name)
            log.info("stage %s: done in %.1f s", ps.name, time.time() - started)
            ran.append(ps.name)
        return ran


@contextlib.contextmanager
def _cluster(address: str | None, num_cpus: int | None) -> Iterator[tuple[str, dict[str, str]]]:
    """The dashboard URL to submit to and the headers that authenticate there: `address`, or a local head
    started on first use and stopped at the end."""
    if address is not None:
        yield address, {}
        return
    from codemill.raycluster import LocalRayHead

    head = LocalRayHead(num_cpus=num_cpus, token_file=default_token_file())
    log.info("starting a local Ray head (dashboard and token auth on)")
    head.start()
    try:
        log.info("Ray dashboard: %s (token in %s)", head.dashboard_url, head.token_path)
        yield head.dashboard_url, head.auth_headers()
    finally:
        head.stop()


def default_token_file() -> Path:
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


def show(dag_path: str, out: str, overrides: dict[str, list[str]] | None = None) -> str:
    """The plan as text: each stage, its config hash, where it reads and writes, and whether it would run."""
    lines = []
    for ps in plan(load_dag(dag_path), Path(dag_path), storage.absolute(out), overrides):
        must_run, why = decide(ps)
        wires = ", ".join(f"{name} <- {ps.spec.inputs[name]}" for name in ps.inputs) or "no inputs"
        lines.append(f"{ps.name:10s} {ps.spec.stage:9s} config {ps.hash}  {wires}  -> {ps.out}\n"
                     f"{'':10s} {'would run' if must_run else 'would skip'}: {why}")
    return "\n".join(lines)


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
    r.add_argument("--force", action="append", metavar="STAGE", help="run this stage even if complete (repeatable)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local head (default: all)")
    s = sub.add_parser("show", help="validate a DAG and print its plan (what would run, and why)")
    s.add_argument("dag")
    s.add_argument("--out", default="runs/plan")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE")
    args = p.parse_args(argv)
    try:
        if args.cmd == "show":
            print(show(args.dag, args.out, parse_sets(args.sets)))
            return 0
        ran = run_dag(args.dag, args.out, args.address, args.only, parse_sets(args.sets), args.num_cpus, args.force)
        print(f"dag {args.dag}: done; ran {ran or 'nothing (all stages complete)'}; outputs under {args.out}")
        return 0
    except (ConfigError, StageFailed, mf.MissingInputError) as exc:
        print(f"codemill dag: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("codemill dag: interrupted; running jobs were stopped. Run the same command again to resume.",
              file=sys.stderr)
        return 130
