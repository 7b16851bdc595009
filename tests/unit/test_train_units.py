"""Train stage pieces without Ray: schedule, DeepSpeed config, config checks, batches from shards, export."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
import torch

from codemill.config import ConfigError, build_config
from codemill.train.config import TrainConfig
from codemill.train.ds_config import deepspeed_config
from codemill.train.model import IGNORE_INDEX, PRESETS, CodeGeeX, ModelConfig
from codemill.train.schedule import learning_rate


def test_schedule_matches_the_papers_equation():
    lr_max, lr_min, warmup, decay = 1e-4, 1e-6, 2_000, 200_000
    assert learning_rate(0) == pytest.approx(lr_max / warmup)
    assert learning_rate(999) == pytest.approx(lr_max * 1000 / warmup)
    assert learning_rate(warmup - 1) == pytest.approx(lr_max)
    for n in (0, 1, 50_000, 100_000, 150_000, 199_999, 200_000):
        expected = lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * n / decay))
        assert learning_rate(warmup + n) == pytest.approx(expected, rel=1e-12)
    assert learning_rate(warmup + 100_000) == pytest.approx((lr_max + lr_min) / 2)
    assert learning_rate(10**7) == pytest.approx(lr_min)
    steps = [learning_rate(s) for s in range(warmup, warmup + decay, 997)]
    assert all(a >= b for a, b in itertools.pairwise(steps))


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert cfg.model.preset == "13b" and cfg.global_batch_size == 3072 and cfg.steps == 213_000
    assert (cfg.optimizer.beta1, cfg.optimizer.beta2, cfg.optimizer.lr_max, cfg.optimizer.lr_min) == (0.9, 0.999, 1e-4, 1e-6)
    assert cfg.deepspeed.zero_stage == 2 and cfg.deepspeed.precision == "fp16"
    ds = deepspeed_config(cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": 192})}), 192)
    assert ds["fp16"]["loss_scale"] == 0 and ds["fp16"]["loss_scale_window"] == 1000
    assert ds["train_batch_size"] == 3072 and ds["zero_optimization"]["stage"] == 2
    assert "optimizer" not in ds and "scheduler" not in ds


def test_batch_arithmetic_reaches_the_global_batch():
    cfg = build_config(TrainConfig, {"global_batch_size": 96, "micro_batch_size": 4, "scaling": {"num_workers": 3}})
    assert cfg.gradient_accumulation_steps == 8
    ds = deepspeed_config(cfg, 3)
    assert ds["train_batch_size"] == 96 == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 3
    with pytest.raises(ConfigError, match="global_batch_size"):
        build_config(TrainConfig, {"global_batch_size": 100, "micro_batch_size": 8})


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="fp16 needs GPUs"):
        build_config(TrainConfig, {"scaling": {"use_gpu": False}})
    with pytest.raises(ConfigError, match="preset"):
        build_config(TrainConfig, {"model": {"preset": "7b"}})
    with pytest.raises(ConfigError, match="seq_length"):
        build_config(TrainConfig, {"model": {"preset": "tiny", "seq_length": 4096}})


def test_bf16_and_fp32_configs():
    cfg = build_config(TrainConfig, {"deepspeed": {"precision": "bf16", "zero_stage": 3}})
    ds = deepspeed_config(cfg, 1)
    assert ds["bf16"] == {"enabled": True} and "fp16" not in ds
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    cfg = build_config(TrainConfig, {"deepspeed": {"precision": "fp32"}, "scaling": {"use_gpu": False}})
    ds = deepspeed_config(cfg, 1)
    assert "bf16" not in ds and "fp16" not in ds and not ds["zero_optimization"]["overlap_comm"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from codemill.tokenize.pack import write_shards_from_texts

    out = str(tmp_path_factory.mktemp("shards"))
    texts = {"Python": [f"def f{i}(x):\n    return x + {i}\n" * 20 for i in range(30)],
             "Go": [f"func f{i}(x int) int {{\n\treturn x + {i}\n}}\n" * 20 for i in range(30)]}
    write_shards_from_texts(texts, out, seq_len=65, validation_fraction=0.2)
    return out


def test_batches_crop_rows_shift_labels_and_mask_padding(shards):
    from codemill.tokenize.reader import ShardReader
    from codemill.train.data import make_batch

    reader = ShardReader(shards, split="train")
    padded = [i for i in range(len(reader)) if reader.n_tokens(i) < reader.seq_len]
    assert padded, "each language's last row is padded"
    idx = np.array([0, padded[0]])
    batch = make_batch(reader, idx, seq_length=32)
    rows = reader.rows(idx)
    assert batch.tokens.shape == batch.labels.shape == batch.document_ids.shape == (2, 32)
    np.testing.assert_array_equal(batch.tokens, rows[:, :32])
    full = make_batch(reader, idx, seq_length=64)
    n = reader.n_tokens(int(padded[0]))
    assert (full.labels[1, n - 1:] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(full.labels[1, : n - 1], rows[1, 1:n])
    for b, i in enumerate(idx):
        starts = reader.doc_starts(int(i))
        expected = np.maximum(np.searchsorted(starts, np.arange(64), side="right"), 1)
        np.testing.assert_array_equal(full.document_ids[b], expected)
    assert batch.languages == (reader.language(0), reader.language(int(padded[0])))
    with pytest.raises(ValueError, match="seq_length"):
        make_batch(reader, idx, seq_length=65)


def test_rank_rows_are_a_function_of_seed_epoch_and_step(shards):
    from codemill.tokenize.reader import ShardReader
    from codemill.train.data import RankRows

    reader = ShardReader(shards, split="train")
    ranks = [RankRows(reader, r, 2, seed=7, rows_per_step=3) for r in range(2)]
    spe = ranks[0].steps_per_epoch
    assert spe == (len(reader) // 2) // 3 and ranks[1].steps_per_epoch == spe
    epoch0 = np.concatenate([ranks[r].rows_of_step(s) for r in range(2) for s in range(spe)])
    assert len(set(epoch0.tolist())) == len(epoch0)  # no row twice in an epoch
    assert ranks[0].position(spe + 1) == (1, 3)
    fresh = RankRows(reader, 0, 2, seed=7, rows_per_step=3)
    np.testing.assert_array_equal(fresh.rows_of_step(spe + 1), ranks[0].rows_of_step(spe + 1))
    assert not np.array_equal(ranks[0].rows_of_step(spe), ranks[0].rows_of_step(0))  # a new order each epoch


def test_export_round_trip(tmp_path, shards):
    from codemill.train import export

    torch.manual_seed(0)
    cfg = ModelConfig(**{**PRESETS["tiny"].to_dict(), "dropout": 0.0})
    model = CodeGeeX(cfg).eval()
    export.write_export(model.state_dict(), cfg, f"{shards}/tokenizer.json", str(tmp_path / "export"), {"step": 3})
    loaded = export.load_model(str(tmp_path / "export"))
    tokens = torch.randint(0, 50_000, (2, 9))
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)
    assert export.export_metadata(str(tmp_path / "export"))["step"] == 3
    assert export.load_tokenizer(str(tmp_path / "export")).encode("def f():").ids


def test_codemill_reads_its_own_files_without_pickle(tmp_path, shards, monkeypatch):
    """Exports and codemill's checkpoint state load with pickle unavailable (DeepSpeed's own files are the
    operator's to protect: README, Security)."""
    import pickle

    from codemill.train import checkpoint, export

    model = CodeGeeX(PRESETS["tiny"])
    uri = str(tmp_path / "export")
    export.write_export(model.state_dict(), model.config, f"{shards}/tokenizer.json", uri)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / checkpoint.STATE_FILE).write_text('{"step": 3}')

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling is not allowed here")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = export.load_model(uri)
    assert torch.equal(loaded.word_embedding.weight, model.word_embedding.weight)
    assert checkpoint.read_state(str(tmp_path / "ckpt")) == {"step": 3}


def test_local_token_file_is_private(tmp_path, monkeypatch):
    import os
    import stat

    from codemill.raycluster import ensure_token_file

    path = tmp_path / "new" / "auth_token"
    ensure_token_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text()
    os.chmod(path, 0o644)
    ensure_token_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == token
    monkeypatch.setenv("HOME", str(tmp_path))
    ray_dir = tmp_path / ".ray"
    ray_dir.mkdir(mode=0o755)
    ensure_token_file(ray_dir / "auth_token")
    assert stat.S_IMODE(ray_dir.stat().st_mode) == 0o700


class _AutoscalingCluster:
    """cluster_resources() as an autoscaling cluster shows it: GPU nodes appear after a while (one timeline
    entry per look), and the bundles the stage asked the autoscaler for."""

    def __init__(self, timeline):
        self.timeline, self.calls, self.requests = timeline, 0, []

    def cluster_resources(self):
        self.calls += 1
        return self.timeline[min(self.calls - 1, len(self.timeline) - 1)]

    def request_resources(self, bundles):
        self.requests.append(bundles)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_the_autoscaler_is_asked_for_the_workers_and_their_arrival_is_reported(caplog):
    from codemill.train.capacity import PROGRESS_EVERY_S, RESOURCE_POLL_S, wait_for_resources

    cfg = build_config(TrainConfig, {"scaling": {"num_workers": 4, "cpus_per_worker": 8, "resource_wait_s": 600}})
    timeline = [{"CPU": 8}] * 3 + [{"CPU": 24, "GPU": 2}] * 3 + [{"CPU": 40, "GPU": 4}]
    cluster, clock = _AutoscalingCluster(timeline), _Clock()
    with caplog.at_level(logging.INFO, logger="codemill.train"):
        assert wait_for_resources(cfg, cluster.cluster_resources, cluster.request_resources, clock.sleep, clock.time)
    assert cluster.requests == [[{"CPU": 8, "GPU": 1}] * 4]
    assert clock.now == 6 * RESOURCE_POLL_S
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("codemill.train")]
    assert lines[0].startswith("train: 0 of 4 GPUs are up (8 of 32 CPUs); asked the autoscaler for 4 workers")
    assert "train: 2 of 4 GPUs are up (24 of 32 CPUs); waiting for the autoscaler (" in " ".join(lines)
    assert "asked the autoscaler for 4 workers (8 CPU + 1 GPU each), waiting up to 600 s" in lines[0]
    progress = [line for line in lines if "waiting for the autoscaler (" in line]
    assert [line.rsplit("(", 1)[1] for line in progress] == [  # one line every PROGRESS_EVERY_S until they came
        f"{PROGRESS_EVERY_S:.0f} s of 600 s)", f"{2 * PROGRESS_EVERY_S:.0f} s of 600 s)"]
    assert lines[-1] == "train: 4 of 4 GPUs are up (40 of 32 CPUs) after 30 s"


def test_workers_that_do_not_come_are_refused_with_what_is_missing_and_the_request_withdrawn():
    from codemill.train.capacity import wait_for_resources

    cfg = build_config(TrainConfig, {"scaling": {"num_workers": 2, "resource_wait_s": 60}})
    cluster, clock = _AutoscalingCluster([{"CPU": 8}]), _Clock()
    with pytest.raises(ConfigError, match=r"GPU: 2 needed, 0 in the cluster.*after waiting 60 s "
                                          r"\(scaling.resource_wait_s\).*raise scaling.resource_wait_s"):
        wait_for_resources(cfg, cluster.cluster_resources, cluster.request_resources, clock.sleep, clock.time)
    assert clock.now == 60 and cluster.requests == [[{"CPU": 1, "GPU": 1}] * 2, []]


def test_a_cluster_that_holds_the_workers_is_not_waited_on_and_trust_skips_the_check():
    from codemill.train.capacity import wait_for_resources

    cfg = build_config(TrainConfig, {"scaling": {"num_workers": 2}})
    cluster, clock = _AutoscalingCluster([{"CPU": 8, "GPU": 2}]), _Clock()
    assert not wait_for_resources(cfg, cluster.cluster_resources, cluster.request_resources, clock.sleep, clock.time)
    assert cluster.requests == [] and clock.now == 0
    trusting = build_config(TrainConfig, {"scaling": {"num_workers": 2, "trust_autoscaler": True}})
    empty = _AutoscalingCluster([{}])
    assert not wait_for_resources(trusting, empty.cluster_resources, empty.request_resources, clock.sleep, clock.time)
    assert empty.calls == 0 and empty.requests == []
