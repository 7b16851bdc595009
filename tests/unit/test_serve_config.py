"""Serve config and request validation, without Ray."""

from __future__ import annotations

import pytest

from codemill.config import ConfigError, build_config
from codemill.serve.config import ServeConfig
from codemill.serve.openai_api import APIError, Limits, parse_json_body, parse_request

LIMITS = Limits(max_n=4, max_num_beams=4, context_length=2048, default_max_tokens=16, vocab_size=50_400)


def test_defaults_and_bounds():
    cfg = build_config(ServeConfig, {})
    assert cfg.context_length == 2048 and cfg.models[0].dtype == "bf16" and cfg.api_key_env is None
    for bad in ({"max_batch_size": 0}, {"port": 70_000}, {"context_length": 4096}, {"models": []},
                {"models": [{"dtype": "int4"}]}, {"models": [{"name": "a"}, {"name": "a"}]},
                {"models": [{"autoscaling": {"min_replicas": 3, "max_replicas": 2}}]}, {"typo": 1},
                {"api_key_env": "sk-not-a-name!"}, {"max_n": 300}, {"batch_buckets": [4, 2]}, {"max_batched_tokens": 100}):
        with pytest.raises(ConfigError):
            build_config(ServeConfig, bad)


def test_the_one_set_parser_addresses_list_items():
    """Every stage's --set (codemill.config): a number is a list index, one past the end appends."""
    cfg = build_config(ServeConfig, {"models": [{"name": "x"}]}, ["models.0.dtype=int8", "models.1.name=y",
                                                                 "port=9000"])
    assert [(m.name, m.dtype) for m in cfg.models] == [("x", "int8"), ("y", "bf16")] and cfg.port == 9000
    new = build_config(ServeConfig, {}, ["models.0.name=first", "batch_buckets.0=4"])  # lists created as needed
    assert [m.name for m in new.models] == ["first"] and new.batch_buckets == [4]
    for bad in (["models.5.dtype=fp32"], ["models.x.dtype=fp32"], ["port.x=1"], ["models." + "9" * 5000 + ".a=1"]):
        with pytest.raises(ConfigError):
            build_config(ServeConfig, {"models": [{}]}, bad)


def test_the_command_line_is_the_registrys_and_the_manifest_the_runners(tmp_path):
    """`codemill serve`'s flags come from codemill/stages.py (--host, --port, --smoke stand for config keys);
    its manifest is written by the runner's code: the config as given (before --input fills the first model),
    hashed as a DAG hashes it, the input's fingerprint when it is a finished stage's output, else its URI."""
    from codemill import manifest as mf
    from codemill import stages
    from codemill.config import config_hash
    from codemill.runner import identity_hash, stage_parser
    from codemill.serve.cli import Record, resolve_config

    train = tmp_path / "train"
    (train / "export").mkdir(parents=True)
    mf.write_manifest(str(train), mf.Manifest(stage="train", status=mf.STATUS_COMPLETE, config_hash="c", config={}))
    argv = ["--input", str(train / "export"), "--port", "9001", "--host", "0.0.0.0", "--smoke", "--set",
            "models.0.dtype=fp32", "--out", str(tmp_path / "serve")]
    args = stage_parser(stages.get("serve")).parse_args(argv)
    given, served = resolve_config(args)
    assert (given.port, given.host, given.smoke_check, given.models[0].dtype) == (9001, "0.0.0.0", True, "fp32")
    assert given.models[0].input is None and served.models[0].input == str(train / "export")
    Record(str(tmp_path / "serve"), given, {"input": served.models[0].input}, {}).write(mf.STATUS_SERVING,
                                                                                       {"url": "http://x/v1"})
    written = mf.read_manifest(str(tmp_path / "serve"))
    assert written.stage == "serve" and written.status == mf.STATUS_SERVING and written.counts["url"] == "http://x/v1"
    assert written.config_hash == config_hash(given) and written.inputs["input"]["stage"] == "train"
    elsewhere = tmp_path / "export-made-elsewhere"
    elsewhere.mkdir()
    Record(str(tmp_path / "s2"), given, {"input": str(elsewhere)}, {}).write(mf.STATUS_SERVING, {})
    plain = mf.read_manifest(str(tmp_path / "s2"))
    assert plain.inputs == {} and plain.config_hash == identity_hash(given, {}, {"input": str(elsewhere)})
    mf.write_manifest(str(train), mf.Manifest(stage="train", status="running", config_hash="c", config={}))
    with pytest.raises(mf.MissingInputError):  # an unfinished training's export is refused, as by every stage
        Record(str(tmp_path / "s3"), given, {"input": str(train / "export")}, {})
    assert stage_parser(stages.get("serve")).parse_args(["--input", "x"]).out is None  # a service needs no --out


def test_request_validation():
    ok = parse_request({"prompt": "x", "stop": "\n", "echo": True, "logprobs": 2}, LIMITS).params
    assert ok.max_tokens == 16 and ok.stop == ("\n",) and ok.prompt_logprobs and ok.logprobs == 2
    assert parse_request({"prompt": "x", "top_k": -1}, LIMITS).params.top_k == 0
    assert parse_request({"prompt": "x", "temperature": 1e-39}, LIMITS).params.temperature == 0  # greedy
    assert parse_request({"prompt": "x", "max_tokens": 0, "echo": True, "logprobs": 1}, LIMITS).params.max_tokens == 0
    many = parse_request({"prompt": "x", "stop": [f"s{i}" for i in range(64)]}, LIMITS).params
    assert len(many.stop) == 64
    pen = parse_request({"prompt": "x", "presence_penalty": 1.5, "frequency_penalty": -0.5,
                         "logit_bias": {"50256": -100, "7": 2.5}}, LIMITS).params
    assert pen.presence_penalty == 1.5 and pen.frequency_penalty == -0.5 and pen.logit_bias == ((7, 2.5), (50256, -100.0))
    assert parse_request({"prompt": "x", "n": 2, "best_of": 2, "suffix": ""}, LIMITS).params.n == 2
    assert parse_request({"prompt": "x", "seed": None, "stop": None, "max_tokens": None}, LIMITS).params.seed is None
    assert parse_request({"prompt": "x", "truncate_prompt_tokens": 7}, LIMITS).truncate_prompt_tokens == 7
    assert parse_request({"prompt": "x"}, LIMITS).truncate_prompt_tokens is None


BAD_BODIES = [
    ({"prompt": "x", "temperature": -1}, "temperature"), ({"prompt": "x", "temperature": 2.5}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"), ({"prompt": "x", "top_p": 1.01}, "top_p"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"), ({"prompt": "x", "max_tokens": -3}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 2**63}, "max_tokens"), ({"prompt": "x", "max_tokens": 1.5}, "max_tokens"),
    ({"prompt": "x", "n": 5}, "n"), ({"prompt": "x", "n": 0}, "n"), ({"prompt": "x", "n": "2"}, "n"),
    ({"prompt": "x", "n": True}, "n"), ({"prompt": "x", "num_beams": 5}, "num_beams"),
    ({"prompt": "x", "num_beams": 2, "n": 3}, "n"), ({"prompt": "x", "num_beams": 2, "logprobs": 1}, "logprobs"),
    ({"prompt": "x", "num_beams": 2, "presence_penalty": 1}, "presence_penalty"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"), ({"prompt": "x", "logprobs": -1}, "logprobs"),
    ({"prompt": "x", "stop": ["a"] * 65}, "stop"), ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "stop": [3]}, "stop"), ({"prompt": "x", "stop": "x" * 300}, "stop"),
    ({"prompt": "x", "language": "Klingon"}, "language"), ({"prompt": "x", "top_k": 2**63}, "top_k"),
    ({"prompt": "x", "top_k": -2}, "top_k"), ({"prompt": "x", "temperature": float("nan")}, "temperature"),
    ({"prompt": "x", "temperature": float("inf")}, "temperature"), ({"prompt": "x", "temperature": 10**400}, "temperature"),
    ({"prompt": "x", "presence_penalty": 2.5}, "presence_penalty"),
    ({"prompt": "x", "frequency_penalty": -3}, "frequency_penalty"),
    ({"prompt": "x", "logit_bias": {"-1": 1}}, "logit_bias"), ({"prompt": "x", "logit_bias": {"50400": 1}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"), ({"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"5": "1"}}, "logit_bias"), ({"prompt": "x", "logit_bias": [1]}, "logit_bias"),
    ({"prompt": "x", "suffix": "return x"}, "suffix"), ({"prompt": "x", "best_of": 3, "n": 2}, "best_of"),
    ({"prompt": "x", "best_of": 1, "n": 2}, "best_of"), ({"prompt": "x", "seed": 2**64}, "seed"),
    ({"prompt": "x", "seed": "1"}, "seed"), ({"prompt": "x", "length_penalty": 1e9}, "length_penalty"),
    ({"prompt": "x", "stream": "yes"}, "stream"), ({"prompt": "x", "echo": 1}, "echo"),
    ({"prompt": "x", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ({"prompt": "x", "truncate_prompt_tokens": 10**9}, "truncate_prompt_tokens"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "model": "m" * 300}, "model"), ({"prompt": 3}, "prompt"), ({}, "prompt"),
    ({"prompt": []}, "prompt"), ({"prompt": [[]]}, "prompt"), ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [-1]}, "prompt"), ({"prompt": [50_400]}, "prompt"), ({"prompt": [True]}, "prompt"),
    ({"prompt": ["a"] * 65}, "prompt"), ({"prompt": None}, "prompt"),
]


@pytest.mark.parametrize("body, param", BAD_BODIES)
def test_bad_requests_name_their_field(body, param):
    with pytest.raises(APIError) as info:
        parse_request(body, LIMITS)
    assert info.value.status == 400 and info.value.param == param, (body, info.value.message)


def test_json_bodies_refused_before_parsing():
    assert parse_json_body(b'{"prompt": "x"}') == {"prompt": "x"}
    for raw, param in ((b'{"prompt": "a\\ud800b"}', "prompt"), (b'{"stop": ["\\udfff"]}', "stop"),
                       (b'{"temperature": NaN}', None), (b'{"temperature": Infinity}', None),
                       (b'{"temperature": 1e999}', "temperature"), (b'{"n": ' + b"9" * 5000 + b"}", None),
                       (b"[1, 2]", None), (b"\xff\xfe", None), (b"[" * 100_000, None), (b'{"a": ' * 40 + b"1" + b"}" * 40, "a"),
                       (b'{"prompt": ', None)):
        with pytest.raises(APIError) as info:
            parse_json_body(raw)
        assert info.value.status == 400 and info.value.param == param, raw[:40]
    with pytest.raises(APIError):
        parse_request(["not", "an", "object"], LIMITS)


def test_serve_config_files_build_the_application_as_shipped():
    """infra/serve/codemill.yaml's application args, as shipped, through `codemill.serve.app:build` (no cluster
    needed: the export is only read by the replicas); serve.yaml validates as a serve config."""
    from pathlib import Path

    import yaml
    from ray.serve import Application

    from codemill.config import read_yaml
    from codemill.serve.app import build

    root = Path(__file__).resolve().parents[2]
    app_cfg = yaml.safe_load((root / "infra/serve/codemill.yaml").read_text())["applications"][0]
    assert app_cfg["import_path"] == "codemill.serve.app:build"
    assert isinstance(build(dict(app_cfg["args"])), Application)
    assert build_config(ServeConfig, app_cfg["args"]["config"]).models[0].name == "codemill"
    shipped = build_config(ServeConfig, read_yaml(root / "infra/serve/serve.yaml"))
    assert shipped.models[0].name == "codemill" and shipped.api_key_env is None
    with pytest.raises(ConfigError):
        build({**app_cfg["args"], "set": ["max_batch_size=-1"]})
    with pytest.raises(ConfigError):
        build({**app_cfg["args"], "set": ["api_key_env=CODEMILL_UNSET_KEY_VARIABLE"]})
