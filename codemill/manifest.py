"""Stage manifests: `<out>/_manifest.json`, written last, is what makes a stage's output complete.

A manifest records the stage, its status, the hash of its resolved config, the fingerprints of its
inputs' manifests, counts and timings. A rerun whose config hash and input fingerprints match a complete
manifest has nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from codemill import __version__, storage
from codemill.stages import MANIFEST_FILE

log = logging.getLogger("codemill")

MANIFEST_NAME = MANIFEST_FILE
STATUS_COMPLETE = "complete"
# Complete, but some items failed for reasons a retry may fix (a repository that could not be fetched):
# downstream stages may use it, and a plain rerun of the stage retries the failed items.
STATUS_COMPLETE_WITH_FAILURES = "complete_with_failures"
USABLE = (STATUS_COMPLETE, STATUS_COMPLETE_WITH_FAILURES)
# A service (serve) that is up: its output records where; a service is started again by every run.
STATUS_SERVING = "serving"


class MissingInputError(RuntimeError):
    """An input URI has no complete manifest: the stage that makes it has not finished."""


@dataclass
class Manifest:
    stage: str
    status: str
    config_hash: str
    config: dict[str, Any]
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {uri, stage, fingerprint}
    counts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    codemill_version: str = __version__
    host: str = field(default_factory=platform.node)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def fingerprint(self) -> str:
        """Identifies this exact output: downstream stages rerun when it changes."""
        canonical = json.dumps(self.to_json(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def manifest_uri(out: str) -> str:
    return storage.join(out, MANIFEST_NAME)


def read_manifest(out: str) -> Manifest | None:
    """The manifest at `out`; None when there is none, or when it is unreadable (empty, cut short, not a
    manifest), which makes the output incomplete: its stage redoes it."""
    manifest, problem = _load(out)
    if problem:
        log.warning("%s: %s; treating the output as incomplete (the stage will redo it)", manifest_uri(out), problem)
    return manifest


def _load(out: str) -> tuple[Manifest | None, str | None]:
    uri = manifest_uri(out)
    if not storage.exists(uri):
        return None, None
    try:
        data = json.loads(storage.read_bytes(uri))
        if not isinstance(data, dict):
            return None, f"not a manifest (a JSON {type(data).__name__})"
        manifest = Manifest.from_json(data)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"unreadable ({type(exc).__name__}: {str(exc)[:200]})"
    if not isinstance(manifest.inputs, dict) or not isinstance(manifest.config_hash, str):
        return None, "not a manifest (wrong field types)"
    return manifest, None


def is_usable(manifest: Manifest) -> bool:
    return manifest.status in USABLE


def require_complete(uri: str, name: str = "input") -> Manifest:
    """The manifest of the stage output at `uri`, or of the stage output `uri` is a declared part of (a train
    stage's export/); MissingInputError when that output is not complete."""
    manifest, problem = _load(uri)
    if manifest is None and not problem:
        parent, part = storage.parent(uri)
        owner, owner_problem = _load(parent) if parent else (None, None)
        if owner is not None and part in _declared_outputs(owner.stage):
            manifest, problem = owner, owner_problem
    if manifest is None or not is_usable(manifest):
        if problem:
            why = f"its {MANIFEST_NAME} is {problem}"
        elif manifest is None:
            why = f"no {MANIFEST_NAME}"
        else:
            why = f"its {MANIFEST_NAME} says status {manifest.status!r}"
        raise MissingInputError(
            f"{name} {uri} is not a complete stage output ({why}): run the stage that writes it first "
            f"(or point {name} at a finished stage's output)")
    return manifest


def input_record(uri: str, manifest: Manifest) -> dict[str, str]:
    return {"uri": str(uri), "stage": manifest.stage, "fingerprint": manifest.fingerprint}


def _declared_outputs(stage: str) -> tuple[str, ...]:
    from codemill.stages import STAGES

    spec = STAGES.get(stage)
    return spec.outputs if spec else ()


def why_stale(existing: Manifest | None, config_hash: str, inputs: dict[str, dict[str, str]]) -> tuple[bool, str]:
    """(must run, why) for an output whose manifest is `existing`, given the config and inputs of now."""
    if existing is None:
        return True, "no complete output yet"
    if existing.status == STATUS_COMPLETE_WITH_FAILURES:
        return True, "its last run had failures to retry"
    if existing.status != STATUS_COMPLETE:
        return True, f"its output says status {existing.status!r}"
    if existing.config_hash != config_hash:
        return True, "config changed"
    theirs = {k: v.get("fingerprint") for k, v in existing.inputs.items()}
    ours = {k: v["fingerprint"] for k, v in inputs.items()}
    if theirs != ours:
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        return True, f"input changed ({', '.join(changed)})"
    return False, "complete for this config and input"


def is_up_to_date(existing: Manifest | None, config_hash: str, inputs: dict[str, dict[str, str]]) -> bool:
    return not why_stale(existing, config_hash, inputs)[0]


def write_manifest(out: str, manifest: Manifest) -> None:
    storage.write_json(manifest_uri(out), manifest.to_json())
