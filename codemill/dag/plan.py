"""A planned run: every stage's validated config, where it reads and writes, and whether it must run now."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError, build_config, config_hash, read_yaml
from codemill.dag.spec import Dag, DagStage, dag_variables, expand_variables, topological_order
from codemill.runner import InputError, check_paths
from codemill.secrets import REDACTED, redact_url

DAG_STATE_DIR = "_dag"


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
            data = expand_variables(read_yaml(dag_path.parent / st.config_file), dag_variables(dag_path), st.name)
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


def entrypoint(ps: PlannedStage, force: bool = False) -> str:
    """The job's command; `force` passes the DAG's --force on, or the stage would find itself complete."""
    parts = ["python", "-m", ps.spec.spec.module, "--config", ps.config_uri, "--out", ps.out]
    for name, uri in ps.inputs.items():
        parts += [ps.spec.spec.input(name).flag, uri]
    if force:
        parts.append("--force")
    return " ".join(shlex.quote(p) for p in parts)
