"""Serve config and request validation, without Ray."""

from __future__ import annotations

import pytest

from codemill.config import ConfigError, build_config
from codemill.serve.config import ServeConfig, apply_overrides
from codemill.serve.openai_api import APIError, Limits, generation_params, parse_request

LIMITS = Limits(max_n=4, max_num_beams=4, context_length=2048, default_max_tokens=16, vocab_size=50_400)


def test_defaults_and_bounds():
    cfg = build_config(ServeConfig, {})
    assert cfg.context_length == 2048 and cfg.models[0].dtype == "bf16" and cfg.api_key_env is None
    for bad in ({"max_batch_size": 0}, {"port": 70_000}, {"context_length": 4096}, {"models": []},
                {"models": [{"dtype": "int4"}]}, {"models": [{"name": "a"}, {"name": "a"}]},
                {"models": [{"autoscaling": {"min_replicas": 3, "max_replicas": 2}}]}, {"typo": 1},
                {"api_key_env": "sk-not-a-name!"}, {"max_n": 99}, {"batch_buckets": [4, 2]}):
        with pytest.raises(ConfigError):
            build_config(ServeConfig, bad)


def test_overrides_address_list_items():
    data = apply_overrides({"models": [{"name": "x"}]}, ["models.0.dtype=int8", "models.1.name=y", "port=9000"])
    cfg = build_config(ServeConfig, data)
    assert [(m.name, m.dtype) for m in cfg.models] == [("x", "int8"), ("y", "bf16")] and cfg.port == 9000
    with pytest.raises(ConfigError):
        apply_overrides({"models": [{}]}, ["models.5.dtype=fp32"])


def test_request_validation():
    ok = generation_params(parse_request({"prompt": "x", "stop": "\n", "echo": True, "logprobs": 2}), LIMITS)
    assert ok.max_tokens == 16 and ok.stop == ("\n",) and ok.prompt_logprobs and ok.logprobs == 2
    assert generation_params(parse_request({"prompt": "x", "top_k": -1}), LIMITS).top_k == 0
    bad = [({"prompt": "x", "temperature": -1}, "temperature"), ({"prompt": "x", "top_p": 0}, "top_p"),
           ({"prompt": "x", "max_tokens": 0}, "max_tokens"), ({"prompt": "x", "n": 5}, "n"),
           ({"prompt": "x", "num_beams": 5}, "num_beams"), ({"prompt": "x", "num_beams": 2, "n": 3}, "n"),
           ({"prompt": "x", "logprobs": 6}, "logprobs"), ({"prompt": "x", "stop": ["a"] * 5}, "stop"),
           ({"prompt": "x", "stop": [""]}, "stop"), ({"prompt": "x", "language": "Klingon"}, "language"),
           ({"prompt": "x", "n": "2"}, "n"), ({"prompt": "x", "temperature": float("nan")}, "temperature"),
           ({"prompt": 3}, "prompt"), ({}, "prompt")]
    for body, param in bad:
        with pytest.raises(APIError) as info:
            generation_params(parse_request(body), LIMITS)
        assert info.value.status == 400 and info.value.param == param, body
    with pytest.raises(APIError):
        parse_request(["not", "an", "object"])


def test_serve_config_file_builds_the_application(tmp_path):
    """infra/serve/codemill.yaml's application args, through `codemill.serve.app:build` (no cluster needed)."""
    from pathlib import Path

    import yaml
    from ray.serve import Application

    from codemill.serve.app import build

    root = Path(__file__).resolve().parents[2]
    app_cfg = yaml.safe_load((root / "infra/serve/codemill.yaml").read_text())["applications"][0]
    assert app_cfg["import_path"] == "codemill.serve.app:build"
    args = {**app_cfg["args"], "input": str(tmp_path), "config": str(root / app_cfg["args"]["config"])}
    assert isinstance(build(args), Application)
    with pytest.raises(ConfigError):
        build({**args, "set": ["max_batch_size=-1"]})
    with pytest.raises(ConfigError):
        build({**args, "set": ["api_key_env=CODEMILL_UNSET_KEY_VARIABLE"]})
