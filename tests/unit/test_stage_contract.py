"""The registry is the single statement of a stage: these tests fail when a stage module, its command line
or its config model disagree with `codemill/stages.py`."""

from __future__ import annotations

import ast
import importlib
import signal
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from codemill.config import ConfigError, StrictModel, build_config, load_config
from codemill.stages import STAGES

REPO = Path(__file__).resolve().parents[2]


def _main_calls(module: str) -> list[str]:
    """The stage names a package's __main__.py passes to stage_main (read, not run)."""
    path = REPO / (module.replace(".", "/") + "/__main__.py")
    tree = ast.parse(path.read_text())
    return [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "stage_main" and node.args]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_module_agrees_with_the_registry(name):
    spec = STAGES[name]
    assert spec.name == name
    if spec.main is None:
        assert _main_calls(spec.module) == [name], f"{spec.module}/__main__.py must call stage_main({name!r})"
        assert callable(spec.load_body())
    else:
        assert callable(spec.load_main())
    model = spec.load_config_model()
    assert issubclass(model, StrictModel), f"{spec.config_model} must derive StrictModel (unknown keys refused)"
    assert spec.outputs, f"stage {name} declares no outputs"
    assert len(set(spec.outputs)) == len(spec.outputs)
    for inp in spec.inputs:
        assert inp.stages and all(s in STAGES for s in inp.stages), f"{name}.{inp.name} reads an unknown stage"
        for upstream in inp.stages:
            if inp.folder:
                assert inp.folder in STAGES[upstream].outputs, f"{upstream} does not declare {inp.folder}"


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


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_numeric_setting_is_bounded(name):
    model = STAGES[name].load_config_model()
    unbounded = sorted(set(_unbounded_numbers(model, [], "")))
    assert not unbounded, f"{name}: numeric settings without bounds: {unbounded}"


def test_types_are_not_coerced():
    from codemill.dedup.config import DedupConfig

    with pytest.raises(ConfigError, match="docs_per_batch"):
        build_config(DedupConfig, {"docs_per_batch": True})
    with pytest.raises(ConfigError, match="docs_per_batch"):
        build_config(DedupConfig, {"docs_per_batch": "12"})
    assert build_config(DedupConfig, {}, ["docs_per_batch=12"]).docs_per_batch == 12


def test_a_huge_int_in_set_is_a_clear_error():
    from codemill.dedup.config import DedupConfig

    with pytest.raises(ConfigError, match="cannot be read as YAML"):
        build_config(DedupConfig, {}, ["docs_per_batch=" + "9" * 5000])


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.time()
    with pytest.raises(ConfigError, match="aliases are expanded"):
        load_config(STAGES["dedup"].load_config_model(), bomb)
    assert time.time() - started < 5


def test_ray_data_context_is_restored():
    import ray.data
    from ray.data.context import ShuffleStrategy

    from codemill.raysupport import data_context

    ctx = ray.data.DataContext.get_current()
    before = (ctx.shuffle_strategy, ctx.enable_progress_bars)
    with data_context(shuffle_strategy=ShuffleStrategy.SORT_SHUFFLE_PULL_BASED, enable_progress_bars=False):
        assert ctx.shuffle_strategy == ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    assert (ctx.shuffle_strategy, ctx.enable_progress_bars) == before


def test_sigterm_handler_is_only_installed_while_running():
    from codemill.dag import sigterm_as_exit

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(SystemExit, match=str(128 + signal.SIGTERM)):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_train_v2_is_checked_not_assumed(monkeypatch):
    from codemill.train.stage import require_train_v2

    require_train_v2()
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", "0")
    with pytest.raises(ConfigError, match="RAY_TRAIN_V2_ENABLED"):
        require_train_v2()


def test_no_module_outside_a_stage_names_another_stages_output_folder():
    """Readers import the output names from the registry: no bare "kept"/"files"/... in storage joins."""
    offenders = []
    names = {o for spec in STAGES.values() for o in spec.outputs}
    for path in (REPO / "codemill").rglob("*.py"):
        if path.name == "stages.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("join", "path", "input_path")
                    and any(isinstance(a, ast.Constant) and a.value in names for a in node.args)):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_stage_modules_import_without_ray_logic_importing_ray():
    """The logic modules of each stage package never import Ray (only stage.py and raysupport do)."""
    offenders = []
    for package in ("crawl", "filter", "dedup", "tokenize", "train"):
        for path in (REPO / "codemill" / package).rglob("*.py"):
            if path.name in ("stage.py", "__main__.py"):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(m == "ray" or m.startswith("ray.") for m in mods):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_every_stage_module_is_importable():
    for spec in STAGES.values():
        importlib.import_module(spec.module)
