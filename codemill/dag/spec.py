"""A DAG file: its stages, the wires between them (checked against the stage registry), the order they run
in, and the variables its strings may use."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeFloat, field_validator, model_validator

from codemill.config import ConfigError, StrictModel, build_config, read_yaml
from codemill.secrets import is_secret_name
from codemill.stages import STAGES, StageSpec

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
RETRY_BACKOFF_S = 10.0  # the first retry waits up to this long (at least half); each further retry twice as long
MAX_RETRIES = 10


class DagStage(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    stage: str
    input: str | None = None                  # shorthand for the input the command line calls --input
    inputs: dict[str, str] = Field(default_factory=dict)  # input name (as the registry declares) -> stage name
    config: dict[str, Any] = Field(default_factory=dict)
    config_file: str | None = None            # relative to the DAG file; `config` keys override it
    entrypoint_num_cpus: NonNegativeFloat | None = None  # default: the registry's resources for the stage
    env: dict[str, str] = Field(default_factory=dict)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)  # a failed job is submitted again this many times
    retry_backoff_s: float = Field(RETRY_BACKOFF_S, ge=0.0, le=3600.0)

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
            data = {**data, "inputs": {_input_named_input(data.get("stage")): data["input"]}}
            data.pop("input")
        return data

    @property
    def spec(self) -> StageSpec:
        return STAGES[self.stage]


def _input_named_input(stage: Any) -> str:
    """The input `input:` stands for: the one whose flag is --input (train's `data`); "input" otherwise, for the
    wiring check to name."""
    spec = STAGES.get(stage) if isinstance(stage, str) else None
    return next((i.name for i in spec.inputs if i.flag == "--input"), "input") if spec else "input"


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


def dag_variables(dag_path: str | Path) -> dict[str, str]:
    """`${NAME}` in a DAG's string values expands to these (then to the environment)."""
    import sysconfig
    paths = sysconfig.get_paths()
    return {"CODEMILL_SITE_PACKAGES": paths["purelib"], "CODEMILL_STDLIB": paths["stdlib"], "CODEMILL_CWD": os.getcwd(),
            "CODEMILL_DAG_DIR": str(Path(dag_path).resolve().parent)}


def expand_variables(value: Any, variables: dict[str, str], where: str = "") -> Any:
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
        return [expand_variables(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: expand_variables(v, variables, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    return value


def load_dag(path: str | Path) -> Dag:
    return build_config(Dag, expand_variables(read_yaml(path), dag_variables(path)), source=str(path))
