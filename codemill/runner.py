"""The life of one stage run, shared by every stage: parse arguments, load the config, check inputs,
skip when already complete, run the body, write the manifest last.

A stage module calls `stage_main(...)` from its `__main__` with its config model and a body function
`body(run: StageRun) -> dict` that does the work and returns the counts to record.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError, config_hash, load_config

log = logging.getLogger("codemill")


@dataclass
class StageRun:
    """What a stage body gets: its validated config, where to write, and its inputs' manifests."""

    stage: str
    config: Any
    out: str
    inputs: dict[str, str] = field(default_factory=dict)  # name -> URI
    input_manifests: dict[str, mf.Manifest] = field(default_factory=dict)
    previous: mf.Manifest | None = None  # the manifest found at `out` before this run, if any

    def path(self, *parts: str) -> str:
        return storage.join(self.out, *parts)


def run_stage(stage: str, config: BaseModel, out: str, body: Callable[[StageRun], dict],
              inputs: dict[str, str] | None = None, force: bool = False) -> mf.Manifest:
    inputs = {k: v for k, v in (inputs or {}).items() if v}
    input_manifests = {name: mf.require_complete(uri, f"--{name}") for name, uri in inputs.items()}
    records = {name: mf.input_record(inputs[name], m) for name, m in input_manifests.items()}
    chash = config_hash(config)
    existing = mf.read_manifest(out)
    if not force and mf.is_up_to_date(existing, chash, records):
        log.info("%s: %s is complete for this config and input; nothing to do", stage, out)
        return existing
    if existing is not None:
        # The old manifest no longer describes what is there; remove it before touching the data.
        storage.delete_file(mf.manifest_uri(out))
    storage.makedirs(out)
    run = StageRun(stage, config, out, inputs, input_manifests, existing)
    started = time.time()
    counts = body(run) or {}
    finished = time.time()
    manifest = mf.Manifest(
        stage=stage, status=mf.STATUS_COMPLETE, config_hash=chash, config=config.model_dump(mode="json"),
        inputs=records, counts=counts,
        timings={"started_at": started, "finished_at": finished, "seconds": round(finished - started, 3)})
    mf.write_manifest(out, manifest)
    log.info("%s: complete in %.1f s: %s", stage, finished - started, counts)
    return manifest


def stage_parser(stage: str, description: str, takes_input: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"codemill {stage}", description=description)
    p.add_argument("--config", help="stage config YAML (defaults are the paper's values)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set source.max_repos=10 (repeatable)")
    p.add_argument("--out", required=True, help="output URI: a local folder or s3://bucket/prefix")
    if takes_input:
        p.add_argument("--input", required=True, help="the previous stage's output URI")
    p.add_argument("--force", action="store_true", help="run even if the output is already complete")
    return p


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def stage_main(stage: str, description: str, config_model: type[BaseModel],
               body: Callable[[StageRun], dict], argv: list[str] | None = None,
               takes_input: bool = True) -> int:
    setup_logging()
    args = stage_parser(stage, description, takes_input).parse_args(argv)
    try:
        config = load_config(config_model, args.config, args.overrides)
        inputs = {"input": storage.absolute(args.input)} if takes_input else {}
        run_stage(stage, config, storage.absolute(args.out), body, inputs, force=args.force)
    except (ConfigError, mf.MissingInputError) as exc:
        print(f"codemill {stage}: {exc}", file=sys.stderr)
        return 2
    return 0
