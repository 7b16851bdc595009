"""The life of one stage run, shared by every stage: parse the arguments the registry declares, load the
config, check the inputs, skip when already complete, run the body, write the manifest last.

A stage module provides only `body(run: StageRun) -> dict` (the counts to record); `codemill <stage>` and
`python -m codemill.<stage>` both call `stage_main(<name>)`. `StageRun` is the toolkit every body uses:
timed phases, one `stats.json`, clearing stale outputs, the values of the stage's own flags (`run.flags`);
the runner logs the final counts once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from codemill import manifest as mf
from codemill import stages, storage
from codemill.config import ConfigError, config_hash, load_config
from codemill.lease import Lease, LeaseHeld
from codemill.logs import setup_logging
from codemill.metrics import publish_stage
from codemill.secrets import redact_config

log = logging.getLogger("codemill")

# Counts a body returns for items that failed in a way a rerun may fix; any above 0 makes the output
# complete-with-failures, which downstream stages may use and a plain rerun retries.
RETRYABLE_FAILURE_COUNTS = ("repos_failed", "infrastructure_errors")


@dataclass
class StageRun:
    """What a stage body gets: its validated config, where to write, its inputs and their manifests."""

    stage: str
    config: Any
    out: str
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> URI
    input_manifests: dict[str, mf.Manifest] = field(default_factory=dict)
    previous: mf.Manifest | None = None  # the manifest found at `out` before this run, if any
    timings: dict[str, float] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)  # the stage's own flags given (StageSpec.flags)
    identity: str = ""        # the hash its manifest records: config, identity-bearing flags, manifest-less inputs

    def path(self, *parts: str) -> str:
        return storage.join(self.out, *parts)

    def input_path(self, name: str, *parts: str) -> str:
        return storage.join(self.inputs[name], *parts)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the body; its seconds go to the manifest's timings and to stats.json."""
        started = time.time()
        try:
            yield
        finally:
            self.timings[f"{name}_s"] = round(time.time() - started, 3)
            log.info("%s: %s done in %.1f s", self.stage, name, self.timings[f"{name}_s"])

    def clear(self, *names: str) -> None:
        """Remove what an earlier run left under these output names (folders or files)."""
        for name in names:
            storage.delete(self.path(name))

    def write_stats(self, stats: dict) -> None:
        """The stage's `stats.json`, with the phase timings so far."""
        storage.write_json(self.path(stages.STATS_FILE), {**stats, "timings": dict(self.timings)})


class InputError(ValueError):
    """An input that cannot be used as given (e.g. the output lies inside it)."""


class StageInputError(RuntimeError):
    """What a stage body raises for input the user can fix (a bad samples file, a missing check, ...): the
    command prints the message and exits with status 2, no traceback."""


def check_paths(out: str, inputs: dict[str, str]) -> None:
    """Refuse an output that is an input or lies inside one: clearing it would delete the input."""
    for name, uri in inputs.items():
        if storage.is_within(out, uri):
            raise InputError(f"--out {out} is inside --{name} {uri}: a stage clears its output before it writes, "
                             f"which would delete its input; choose an output outside the input")
        if storage.is_within(uri, out):
            raise InputError(f"--{name} {uri} is inside --out {out}: a stage clears its output before it writes, "
                             f"which would delete its input; choose an output outside the input")


def run_stage(stage: str, config: BaseModel, out: str, body: Callable[[StageRun], dict],
              inputs: dict[str, str] | None = None, force: bool = False, flags: dict[str, Any] | None = None
              ) -> mf.Manifest:
    inputs = {k: v for k, v in (inputs or {}).items() if v}
    flags = dict(flags or {})
    check_paths(out, inputs)
    input_manifests, records, chash = resolve_inputs(stage, config, inputs, flags)
    existing = mf.read_manifest(out)
    must_run, why = (True, "forced") if force else mf.why_stale(existing, chash, records)
    if not must_run:
        log.info("%s: %s is %s; nothing to do", stage, out, why)
        return existing
    log.info("%s: runs (%s)", stage, why)
    storage.makedirs(out)
    with Lease(out, f"stage {stage}"):
        if existing is not None or storage.exists(mf.manifest_uri(out)):
            # The old manifest no longer describes what is there; remove it before touching the data.
            storage.delete_file(mf.manifest_uri(out))
        run = StageRun(stage, config, out, inputs, input_manifests, existing, flags=flags, identity=chash)
        started = time.time()
        counts = body(run) or {}
        finished = time.time()
    _check_outputs(stage, out)
    failures = sum(int(counts.get(key) or 0) for key in RETRYABLE_FAILURE_COUNTS)
    manifest = write_stage_manifest(
        stage, out, mf.STATUS_COMPLETE_WITH_FAILURES if failures else mf.STATUS_COMPLETE, config, chash, records,
        counts, {"started_at": started, "finished_at": finished, "seconds": round(finished - started, 3),
                 **run.timings})
    publish_stage(stage, counts, manifest.timings)
    log.info("%s: complete in %.1f s: %s", stage, finished - started, counts)
    return manifest


def resolve_inputs(stage: str, config: BaseModel, inputs: dict[str, str], flags: dict[str, Any]
                   ) -> tuple[dict[str, mf.Manifest], dict[str, dict], str]:
    """(the inputs' manifests, their records for this stage's manifest, the identity hash it records). An input
    the registry lets go without a manifest, given as a plain path, is identified by its URI instead."""
    spec = stages.STAGES.get(stage)
    plain_paths = {name: uri for name, uri in inputs.items()
                   if spec is not None and not spec.input(name).needs_manifest and not _has_manifest(uri)}
    input_manifests = {name: mf.require_complete(uri, f"--{name}") for name, uri in inputs.items()
                       if name not in plain_paths}
    records = {name: mf.input_record(inputs[name], m) for name, m in input_manifests.items()}
    return input_manifests, records, identity_hash(config, _flag_identity(spec, flags), plain_paths)


def write_stage_manifest(stage: str, out: str, status: str, config: BaseModel, identity: str, records: dict,
                         counts: dict, timings: dict) -> mf.Manifest:
    """A stage's manifest, its config recorded with secrets redacted: written last by `run_stage`, and by a
    service (serve) when it is up."""
    manifest = mf.Manifest(stage=stage, status=status, config_hash=identity,
                           config=redact_config(config.model_dump(mode="json")), inputs=records, counts=counts,
                           timings=timings)
    mf.write_manifest(out, manifest)
    return manifest


def _has_manifest(uri: str) -> bool:
    parent, _ = storage.parent(uri)
    return any(storage.exists(mf.manifest_uri(u)) for u in (uri, parent) if u)


def _flag_identity(spec: stages.StageSpec | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The run flags that are part of what the output depends on: their values, or the sha256 of the content
    at the URI they name."""
    identity = {}
    for flag in spec.flags if spec else ():
        if flag.config_key or flag.identity == "none" or flags.get(flag.name) in (None, False):
            continue
        value = flags[flag.name]
        if flag.identity == "content":
            value = {"uri": value, "sha256": hashlib.sha256(storage.read_bytes(value)).hexdigest()}
        identity[flag.name] = value
    return identity


def identity_hash(config: BaseModel, flags: dict[str, Any], plain_inputs: dict[str, str]) -> str:
    """The config's hash alone when no flag or manifest-less input adds to it, as the DAG runner computes it."""
    if not flags and not plain_inputs:
        return config_hash(config)
    blob = json.dumps({"config": config_hash(config), "flags": flags, "inputs": plain_inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_outputs(stage: str, out: str) -> None:
    """Every name a stage writes is declared in the registry (readers import those names from it)."""
    spec = stages.STAGES.get(stage)
    if spec is None:
        return
    declared = set(spec.outputs) | {stages.MANIFEST_FILE}
    written = {name for name in storage.list_names(out)}
    undeclared = sorted(written - declared)
    if undeclared:
        raise RuntimeError(f"stage {stage} wrote {undeclared} under {out}, which codemill/stages.py does not "
                           f"declare as its outputs ({sorted(declared)}): declare them there")


def stage_parser(spec: stages.StageSpec) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"codemill {spec.name}", description=spec.summary)
    p.add_argument("--config", help="stage config YAML (defaults are the paper's values)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set source.max_repos=10 (repeatable)")
    if spec.long_running:  # a service runs without one; with one, its manifest says where it serves
        p.add_argument("--out", help="record the service here (its manifest: where it serves, or its smoke check)")
    else:
        p.add_argument("--out", required=True, help="output URI: a local folder or s3://bucket/prefix")
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}

    def where(group: str):
        if not group:
            return p
        if group not in groups:
            groups[group] = p.add_mutually_exclusive_group(required=group == spec.required_group)
        return groups[group]

    for inp in spec.inputs:
        where(inp.group).add_argument(inp.flag, dest=f"input_{inp.name}", required=inp.required and not inp.group,
                                      metavar="URI", help=inp.help)
    for flag in spec.flags:
        if flag.switch:
            where(flag.group).add_argument(flag.flag, dest=f"flag_{flag.name}", action="store_true", help=flag.help)
        else:
            where(flag.group).add_argument(flag.flag, dest=f"flag_{flag.name}", metavar=flag.metavar or None,
                                           choices=flag.choices or None, help=flag.help)
    p.add_argument("--force", action="store_true", help="run even if the output is already complete")
    return p


def parsed_flags(spec: stages.StageSpec, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """(config overrides from the flags that stand for config keys, the other flags given)."""
    overrides, flags = [], {}
    for flag in spec.flags:
        value = getattr(args, f"flag_{flag.name}")
        if value in (None, False):
            continue
        if flag.config_key:
            overrides.append(f"{flag.config_key}={value}")
        else:
            flags[flag.name] = storage.absolute(value) if flag.identity == "content" else value
    return overrides, flags


def stage_main(name: str, argv: list[str] | None = None) -> int:
    """`codemill <name> ...` / `python -m codemill.<name> ...`: one stage run in this process."""
    setup_logging()
    spec = stages.get(name)
    args = stage_parser(spec).parse_args(argv)
    try:
        flag_overrides, flags = parsed_flags(spec, args)
        config = load_config(spec.load_config_model(), args.config, [*args.overrides, *flag_overrides])
        inputs = {inp.name: storage.absolute(getattr(args, f"input_{inp.name}"))
                  for inp in spec.inputs if getattr(args, f"input_{inp.name}")}
        run_stage(spec.name, config, storage.absolute(args.out), spec.load_body(), inputs, force=args.force,
                  flags=flags)
    except (ConfigError, mf.MissingInputError, InputError, LeaseHeld, StageInputError) as exc:
        print(f"codemill {name}: {exc}", file=sys.stderr)
        return 2
    return 0
