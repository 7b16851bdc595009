"""Config loading, storage (local and real S3 via moto_server), manifests and the stage runner."""

from __future__ import annotations

import pytest
from storage_checks import Demo, roundtrip, runner_skips_complete_and_reruns_on_change

from codemill.config import ConfigError, build_config, config_hash, load_config
from codemill.runner import stage_main


def test_overrides_keep_yaml_types(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("size: 5\ninner:\n  threshold: 0.5\n")
    cfg = load_config(Demo, cfg_file, ["inner.names=[x, y]", "size=7"])
    assert cfg.size == 7 and cfg.inner.threshold == 0.5 and cfg.inner.names == ["x", "y"]


def test_bad_value_names_file_key_and_value(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("inner:\n  threshold: lots\n")
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        load_config(Demo, cfg_file)
    msg = str(err.value)
    assert "bad.yaml" in msg and "inner.threshold" in msg and "lots" in msg and "number" in msg


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="'inner.threshhold' is not a known setting"):
        build_config(Demo, {"inner": {"threshhold": 1}})


def test_malformed_override():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build_config(Demo, {}, ["size"])


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(Demo()) == config_hash(build_config(Demo, {"size": 3}))
    assert config_hash(Demo()) != config_hash(build_config(Demo, {"size": 4}))


def test_storage_local(tmp_path):
    roundtrip(str(tmp_path))
    assert not list(tmp_path.rglob("*.tmp-*"))  # atomic writes leave no temporaries


def test_runner_skips_complete_and_reruns_on_change(tmp_path):
    runner_skips_complete_and_reruns_on_change(str(tmp_path))


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    rc = stage_main("dedup", ["--out", str(tmp_path / "o"), "--input", str(tmp_path / "nope")])
    assert rc == 2
    assert "is not a complete stage output (no _manifest.json)" in capsys.readouterr().err


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    """PyYAML alone reads `6e-05` as a string: a learning rate written as Python prints it was refused."""
    from codemill.config import parse_override, read_yaml

    assert parse_override("optimizer.lr_min=6e-05") == (["optimizer", "lr_min"], 6e-05)
    (tmp_path / "c.yaml").write_text("a: 1e3\nb: -2.5E-4\nc: e5\nd: 7\ne: 1.0\n")
    assert read_yaml(tmp_path / "c.yaml") == {"a": 1000.0, "b": -2.5e-4, "c": "e5", "d": 7, "e": 1.0}
