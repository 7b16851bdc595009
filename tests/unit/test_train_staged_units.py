"""Staged training without Ray: `data.languages` row selection and its budget, and the checks of an
`init_from` export (shape, tokenizer, where it comes from) that refuse a run before any worker starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError, build_config
from codemill.train.config import TrainConfig

LANGUAGES = ("Python", "Go", "Java")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from codemill.tokenize.pack import write_shards_from_texts

    out = str(tmp_path_factory.mktemp("shards"))
    texts = {"Python": [f"def f{i}(x):\n    return x + {i}\n" * 20 for i in range(30)],
             "Go": [f"func f{i}(x int) int {{\n\treturn x + {i}\n}}\n" * 20 for i in range(20)],
             "Java": [f"int f{i}(int x) {{ return x + {i}; }}\n" * 20 for i in range(10)]}
    write_shards_from_texts(texts, out, seq_len=65, validation_fraction=0.2)
    mf.write_manifest(out, mf.Manifest(stage="tokenize", status=mf.STATUS_COMPLETE, config_hash="test", config={}))
    return out


def test_languages_select_exactly_their_rows(shards):
    from codemill.tokenize.reader import ShardReader
    from codemill.train.data import RankRows, make_batch, select_languages

    reader = ShardReader(shards, split="train")
    everything = [reader.language(i) for i in range(len(reader))]
    assert select_languages(reader, None) is reader
    view = select_languages(reader, ["Go", "Java"])
    expected = [i for i, name in enumerate(everything) if name in ("Go", "Java")]
    assert view.indices.tolist() == expected and len(view) == len(expected) < len(reader)
    # Each epoch deals every selected row once over the ranks, and a new order each epoch.
    for epoch in (0, 1):
        dealt = np.concatenate([view.rank_indices(r, 2, epoch, seed=3) for r in range(2)])
        assert sorted(dealt.tolist()) == expected
    assert not np.array_equal(view.rank_indices(0, 2, 0, 3), view.rank_indices(0, 2, 1, 3))
    rows = RankRows(view, 0, 1, seed=3, rows_per_step=4)
    assert rows.steps_per_epoch == len(expected) // 4
    read = np.concatenate([rows.rows_of_step(s) for s in range(rows.steps_per_epoch)])
    assert {everything[i] for i in read} == {"Go", "Java"}
    batch = make_batch(view, rows.rows_of_step(0), seq_length=32)
    assert set(batch.languages) <= {"Go", "Java"}
    np.testing.assert_array_equal(batch.tokens, reader.rows(rows.rows_of_step(0))[:, :32])


def test_budget_reports_tokens_per_language_and_epochs(shards):
    from codemill.tokenize.reader import ShardReader
    from codemill.train.budget import data_budget, describe

    reader = ShardReader(shards, split="train")
    tokens = {name: sum(reader.n_tokens(i) for i in range(len(reader)) if reader.language(i) == name)
              for name in LANGUAGES}
    rows = {name: sum(reader.language(i) == name for i in range(len(reader))) for name in LANGUAGES}
    cfg = build_config(TrainConfig, {"data": {"languages": ["Python", "Go"]}, "steps": 10, "global_batch_size": 16})
    budget = data_budget(shards, cfg)
    assert budget["languages"] == {name: {"rows": rows[name], "tokens": tokens[name]} for name in ("Python", "Go")}
    assert budget["tokens"] == tokens["Python"] + tokens["Go"]
    assert budget["epochs"] == pytest.approx(160 / (rows["Python"] + rows["Go"]))
    assert f"Go {tokens['Go']:,}" in describe(budget)
    every = data_budget(shards, build_config(TrainConfig, {"steps": 10, "global_batch_size": 16}))
    assert set(every["languages"]) == set(LANGUAGES)


def test_bad_language_selections_are_refused(shards):
    from codemill.train.budget import data_budget

    with pytest.raises(ConfigError, match="unknown languages \\['python'\\]"):
        build_config(TrainConfig, {"data": {"languages": ["python"]}})
    with pytest.raises(ConfigError, match="data.languages"):
        build_config(TrainConfig, {"data": {"languages": []}})
    cfg = build_config(TrainConfig, {"data": {"languages": ["Python", "Rust"]}})
    with pytest.raises(ConfigError, match="no rows of \\['Rust'\\]; it holds \\['Go', 'Java', 'Python'\\]"):
        data_budget(shards, cfg)


def write_train_output(root, shards: str, preset: str = "tiny", tokenizer: bytes | None = None) -> str:
    """A complete train stage output with an export of `preset`; returns the export's URI."""
    from codemill.train.export import write_export
    from codemill.train.model import CodeGeeX
    from codemill.train.model_config import PRESETS

    tokenizer_path = f"{shards}/tokenizer.json"
    if tokenizer is not None:
        tokenizer_path = str(root / "other-tokenizer.json")
        storage.write_bytes(tokenizer_path, tokenizer)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CodeGeeX(PRESETS[preset]).state_dict().items()}
    state = {k: torch.zeros(shape) for k, shape in shapes.items()}
    export = str(root / "train" / "export")
    write_export(state, PRESETS[preset], tokenizer_path, export, extra={"step": 7})
    mf.write_manifest(str(root / "train"), mf.Manifest(stage="train", status=mf.STATUS_COMPLETE, config_hash="t",
                                                       config={}))
    return export


def stage(shards: str, out: str, *settings: str, init: str | None = None, preset: str = "tiny") -> int:
    from codemill.runner import stage_main

    argv = ["--input", shards, "--out", out, "--set", f"model.preset={preset}", "--set", "scaling.use_gpu=false",
            "--set", "deepspeed.precision=fp32", "--set", "global_batch_size=4", "--set", "micro_batch_size=4"]
    for setting in settings:
        argv += ["--set", setting]
    return stage_main("train", argv + (["--init", init] if init else []))


def test_an_export_of_another_shape_is_refused_naming_both(shards, tmp_path, capsys):
    from codemill.train.init import check_shape
    from codemill.train.model_config import PRESETS

    export = write_train_output(tmp_path, shards, preset="tiny")
    assert stage(shards, str(tmp_path / "mono"), f"init_from={export}", preset="125m") == 2
    message = capsys.readouterr().err
    assert "'num_layers': 2, 'hidden_size': 64" in message and "'num_layers': 12, 'hidden_size': 768" in message
    assert "model.preset=125m" in message and "set model.preset=tiny" in message
    assert not storage.exists(str(tmp_path / "mono" / "export"))
    check_shape(export, PRESETS["tiny"], "tiny")  # the same shape passes


def test_init_checks_refuse_what_cannot_be_started_from(shards, tmp_path, capsys):
    export = write_train_output(tmp_path / "a", shards, tokenizer=b'{"other": true}')
    assert stage(shards, str(tmp_path / "out"), f"init_from={export}") == 2
    assert "differs from the one the shards" in capsys.readouterr().err

    good = write_train_output(tmp_path / "b", shards)
    assert stage(shards, str(tmp_path / "out"), f"init_from={good}", init=good) == 2
    assert "give one of them" in capsys.readouterr().err

    assert stage(shards, str(tmp_path / "out"), f"init_from={tmp_path / 'nowhere' / 'export'}") == 2
    assert "not a complete stage output" in capsys.readouterr().err

    assert stage(shards, str(tmp_path / "out"), f"init_from={shards}") == 2  # a tokenize output
    assert "a tokenize stage's output, not a train stage's export/" in capsys.readouterr().err


def test_run_names_follow_the_config_and_the_inputs():
    from codemill.train.stage import run_name

    cfg = build_config(TrainConfig, {})
    base = run_name(cfg, {"data": "a"})
    assert run_name(cfg, {"data": "a"}) == base
    assert len({base, run_name(cfg, {"data": "b"}), run_name(cfg, {"data": "a", "init": "m"}),
                run_name(build_config(TrainConfig, {"steps": 5}), {"data": "a"})}) == 4
    assert run_name(build_config(TrainConfig, {"run": {"name": "mine"}}), {"data": "a"}) == "mine"
    assert json.dumps(base).startswith('"train-')
