"""Each stage's command line as a user runs it: `--help` shows the inputs the registry declares, and
validating every config imports neither torch nor deepspeed (a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from codemill.stages import STAGES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(n for n, s in STAGES.items() if s.main is None))
def test_help_shows_the_declared_inputs(name):
    proc = subprocess.run([sys.executable, "-m", "codemill.cli", name, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for inp in STAGES[name].inputs:
        assert inp.flag in proc.stdout
    assert "--out" in proc.stdout and "--config" in proc.stdout and "--set" in proc.stdout


def _bounded(metadata) -> bool:
    return any(any(getattr(m, a, None) is not None for a in ("ge", "gt", "le", "lt")) for m in metadata)


def _unbounded_numbers(annotation, metadata, key: str):
    """Keys of numbers (also list items and dict values) with no bound, walking nested models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            yield from _unbounded_numbers(info.annotation, info.metadata, f"{key}{name}.")
        return
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        flat = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        yield from _unbounded_numbers(inner, [*metadata, *flat], key)
        return
    if annotation in (int, float):
        if not _bounded(metadata):
            yield key.rstrip(".")
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset):
        for arg in args:
            if arg is not Ellipsis:
                yield from _unbounded_numbers(arg, [], key)
    elif origin is dict:
        yield from _unbounded_numbers(args[1], [], key)
    elif args:  # unions, Optional
        for arg in args:
            yield from _unbounded_numbers(arg, metadata, key)


def test_validating_every_config_imports_neither_torch_nor_deepspeed():
    code = ("import sys; from codemill.dag import show; show('dags/local.yaml', 'runs/plan');"
            "print(sorted(m for m in ('torch', 'deepspeed') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
