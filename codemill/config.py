"""Loading stage configs: YAML file + `--set key.sub=value` overrides, validated by pydantic.

Every stage declares a pydantic model (in its own package) whose defaults are the paper's values.
This module turns a file and overrides into that model, or into a `ConfigError` that names the file,
the key, the offending value and what would be accepted, before any work starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from codemill.secrets import redact_url

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and how to fix it."""


# A loaded YAML document may hold at most this many values once its aliases are expanded: a few hundred
# bytes of nested aliases ("billion laughs") would otherwise expand to gigabytes when the config is copied.
MAX_YAML_VALUES = 100_000


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors (a typo must not silently use a default), and
    values are not coerced across types (`true` is no int, "3" is no number); lists may stand for tuples."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class _Loader(yaml.SafeLoader):
    """YAML 1.1's SafeLoader, but floats as YAML 1.2 (and Python) write them: PyYAML reads `6e-05` or `1e3`,
    which have no dot, as strings, and a config would then refuse `lr_min: 6e-05` as not a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML, so numbers and lists keep their type)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set filter.min_size_bytes=2048")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: the key before '=' is empty")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int past Python's 4,300-digit limit
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ConfigError(f"--set {shown!r}: the value cannot be read as YAML ({str(exc)[:200]})") from None
    _check_size(value, f"--set {key}")
    return parts, value


def apply_override(data: dict, parts: list[str], value: Any) -> None:
    """data[a][b]... = value for `--set a.b...=value`. A number addresses a list item (`models.0.dtype`: the
    first model's dtype); the index one past the end appends an item. A key that is missing is created: a list
    when a number follows it, else a mapping."""
    key = ".".join(parts)
    node: dict | list = data
    for i, part in enumerate(parts):
        if isinstance(node, list):
            if not part.isdigit() or len(part) > 9 or int(part) > len(node):
                raise ConfigError(f"--set {key}: '{part}' is not an index of a list of {len(node)} items (0 to "
                                  f"{len(node)}, which appends one)")
            index: int | str = int(part)
            if index == len(node):
                node.append(None)
        elif isinstance(node, dict):
            index = part
        else:
            raise ConfigError(f"--set {key}: '{parts[i - 1]}' holds {node!r}, not a mapping or a list")
        if i == len(parts) - 1:
            node[index] = value
            return
        child = node[index] if isinstance(node, list) else node.get(index)
        if child is None:
            child = node[index] = [] if parts[i + 1].isdigit() else {}
        node = child


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a local path or a storage URI (the DAG runner stores stage configs with the run)."""
    from codemill import storage

    if not storage.exists(str(path)):
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml(storage.read_bytes(str(path)).decode()) or {}
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: undecodable bytes, an int of 5,000 digits
        raise ConfigError(f"{path}: not valid YAML: {str(exc)[:500]}") from None
    _check_size(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {type(data).__name__}")
    return data


def _check_size(data: Any, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_VALUES values, counting without expanding."""
    budget = MAX_YAML_VALUES
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(f"{source}: more than {MAX_YAML_VALUES:,} values once YAML aliases are expanded; "
                              f"a config is never that large (an alias bomb?)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = redact_url(json.dumps(value, default=str)) if not isinstance(value, (dict, BaseModel)) else "{...}"
        if len(shown) > 120:
            shown = shown[:117] + "..."
        if err["type"] == "extra_forbidden":
            lines.append(f"  - key '{key}' is not a known setting (check its spelling and indentation)")
        else:
            lines.append(f"  - key '{key}' = {shown}: {err['msg']}")
    return "\n".join(lines)


def build_config(model: type[T], data: dict | None = None, overrides: list[str] | None = None,
                 source: str = "<config>") -> T:
    """Validate `data` (already merged from YAML) plus overrides into `model`."""
    data = copy.deepcopy(data or {})
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    data = read_yaml(path) if path else {}
    return build_config(model, data, overrides, source=str(path) if path else "<defaults + --set>")


def config_hash(config: BaseModel) -> str:
    """A stable hash of the resolved config: equal configs give equal hashes across runs and hosts."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
