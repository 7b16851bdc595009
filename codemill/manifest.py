"""Stage manifests: `<out>/_manifest.json`, written last, is what makes a stage's output complete.

A manifest records the stage, its status, the hash of its resolved config, the fingerprints of its
inputs' manifests, counts and timings. A rerun whose config hash and input fingerprints match a complete
manifest has nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from codemill import __version__, storage

MANIFEST_NAME = "_manifest.json"
STATUS_COMPLETE = "complete"


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
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def fingerprint(self) -> str:
        """Identifies this exact output: downstream stages rerun when it changes."""
        canonical = json.dumps(self.to_json(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def manifest_uri(out: str) -> str:
    return storage.join(out, MANIFEST_NAME)


def read_manifest(out: str) -> Manifest | None:
    uri = manifest_uri(out)
    if not storage.exists(uri):
        return None
    return Manifest.from_json(storage.read_json(uri))


def require_complete(uri: str, name: str = "input") -> Manifest:
    manifest = read_manifest(uri)
    if manifest is None or manifest.status != STATUS_COMPLETE:
        raise MissingInputError(
            f"{name} {uri} has no complete {MANIFEST_NAME}: run the stage that writes it first "
            f"(or point --input at a finished stage's output)")
    return manifest


def input_record(uri: str, manifest: Manifest) -> dict[str, str]:
    return {"uri": str(uri), "stage": manifest.stage, "fingerprint": manifest.fingerprint}


def is_up_to_date(existing: Manifest | None, config_hash: str, inputs: dict[str, dict[str, str]]) -> bool:
    if existing is None or existing.status != STATUS_COMPLETE or existing.config_hash != config_hash:
        return False
    theirs = {k: v["fingerprint"] for k, v in existing.inputs.items()}
    ours = {k: v["fingerprint"] for k, v in inputs.items()}
    return theirs == ours


def write_manifest(out: str, manifest: Manifest) -> None:
    storage.write_json(manifest_uri(out), manifest.to_json())


def now() -> float:
    return time.time()
