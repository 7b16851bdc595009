"""The train stage end to end on the CPU: tiny preset, 2 Ray Train workers (gloo), DeepSpeed ZeRO-2 (fp32,
torch's Adam), shards written by the tokenize stage's own writer.

One uninterrupted run is shared by the tests; a second run has its last worker fail once and must be
restarted by Ray Train from the latest checkpoint and end with the same losses.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from codemill import manifest as mf
from codemill import storage

STEPS = 12
CHECKPOINT_EVERY = 4
FAULT_STEP = 6  # after the checkpoint of step 4: steps 5 and 6 are redone after the restart

SETTINGS = {
    "model.preset": "tiny", "model.seq_length": 64, "model.dropout": 0.1,
    "scaling.num_workers": 2, "scaling.use_gpu": False, "scaling.cpus_per_worker": 1,
    "deepspeed.precision": "fp32", "deepspeed.zero_stage": 2,
    "steps": STEPS, "global_batch_size": 8, "micro_batch_size": 2,
    "optimizer.lr_max": 3e-3, "optimizer.lr_min": 3e-4, "optimizer.warmup_steps": 2, "optimizer.decay_steps": STEPS,
    "log_every": 2, "eval_every": 6, "eval_batches": 2, "checkpoint_every": CHECKPOINT_EVERY, "run.max_failures": 1,
}


def repetitive_corpus() -> dict[str, list[str]]:
    python = [("def add(a, b):\n    return a + b\n\n\n" * 12) + f"print(add({i}, {i + 1}))\n" for i in range(30)]
    go = [("func add(a int, b int) int {\n\treturn a + b\n}\n\n" * 12) + f"// {i}\n" for i in range(30)]
    return {"Python": python, "Go": go}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from codemill.tokenize.pack import write_shards_from_texts

    out = str(tmp_path_factory.mktemp("tokenize"))
    write_shards_from_texts(repetitive_corpus(), out, seq_len=65, validation_fraction=0.1)
    # What the tokenize stage's runner writes last: the train stage refuses an input without it.
    mf.write_manifest(out, mf.Manifest(stage="tokenize", status=mf.STATUS_COMPLETE, config_hash="test", config={}))
    return out


def run_train(shards: str, out: str, **extra) -> int:
    from codemill.runner import stage_main

    argv = ["--input", shards, "--out", out]
    for key, value in {**SETTINGS, **extra}.items():
        argv += ["--set", f"{key}={value}"]
    return stage_main("train", argv)


def losses(out: str) -> dict[int, float]:
    from codemill.train.metrics import METRICS_FILE, read_records

    return {r["step"]: r["loss"] for r in read_records(storage.join(out, METRICS_FILE))}


@pytest.fixture(scope="module")
def trained(shards, ray_head, tmp_path_factory):
    import os

    from codemill.train.loop import TEMP_PREFIX

    out = str(tmp_path_factory.mktemp("train"))
    # The workers' temp area (TMPDIR reaches them), so other test runs on the machine do not blur the count.
    temp = tmp_path_factory.mktemp("worker-tmp")
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(temp)
    try:
        # 3 checkpoints (steps 4, 8, 12) with only 2 kept: the temp area must not grow with either.
        assert run_train(shards, out, **{"run.keep_checkpoints": 2}) == 0
    finally:
        os.environ.pop("TMPDIR") if saved is None else os.environ.__setitem__("TMPDIR", saved)
    used = sorted(p.name for p in Path(temp).iterdir())
    assert not [n for n in used if n.startswith(TEMP_PREFIX)], f"left in the temp area: {used}"
    return out


def test_loss_falls_and_outputs_are_complete(trained):
    from codemill.train.metrics import METRICS_FILE, read_records

    records = read_records(storage.join(trained, METRICS_FILE))
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    first, last = records[0]["loss"], records[-1]["loss"]
    assert first == pytest.approx(math.log(52_224), abs=1.0)
    assert last < first / 2, (first, last)
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [6, 12] and evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert {"val_loss/Python", "val_loss/Go"} <= set(evals[-1])
    for r in records:
        assert 0 < r["lr"] <= 3e-3 and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0, r
        assert r["loss_scale"] == 1.0 and math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0, r
        assert math.isfinite(r["loss"]) and 0 < r["loss"] < 15, r
    stats = storage.read_json(storage.join(trained, "stats.json"))
    assert stats["steps"] == STEPS and stats["final_loss"] == last
    assert storage.read_bytes(storage.join(trained, "loss_curve.png")).startswith(b"\x89PNG")
    assert storage.list_files(storage.join(trained, "tensorboard"), "")
    assert mf.read_manifest(trained).counts["steps"] == STEPS


def test_learning_rate_follows_the_schedule(trained):
    from codemill.train.schedule import learning_rate

    for step, record in sorted({r["step"]: r for r in _records(trained)}.items()):
        assert record["lr"] == pytest.approx(learning_rate(step - 1, 3e-3, 3e-4, 2, STEPS), rel=1e-12)


def _records(out):
    from codemill.train.metrics import METRICS_FILE, read_records

    return read_records(storage.join(out, METRICS_FILE))


def test_export_reproduces_the_trained_models_logits(trained, shards):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from codemill.tokenize.reader import ShardReader
    from codemill.train import checkpoint, load_model
    from codemill.train.model import CodeGeeX

    exported = load_model(storage.join(trained, "export"))
    assert exported.config.num_layers == 2 and not exported.training
    # The reference: the fp32 weights DeepSpeed consolidates from the last checkpoint's ZeRO partitions.
    checkpoints = sorted(p for p in storage.list_files(storage.join(trained, "ray_train"), "train_state.json"))
    latest = max(checkpoints, key=lambda p: storage.read_json(p)["step"])
    assert storage.read_json(latest)["step"] == STEPS
    state = get_fp32_state_dict_from_zero_checkpoint(latest.rsplit("/", 1)[0], tag=checkpoint.DEEPSPEED_TAG)
    reference = CodeGeeX(exported.config).eval()
    reference.load_state_dict(state)
    tokens = torch.from_numpy(ShardReader(shards, split="validation").rows(np.arange(2))[:, :64].astype(np.int64))
    with torch.no_grad():
        torch.testing.assert_close(exported(tokens), reference(tokens), rtol=0, atol=0)
    tokenizer_text = storage.read_bytes(storage.join(trained, "export", "tokenizer.json"))
    assert tokenizer_text == storage.read_bytes(storage.join(shards, "tokenizer.json"))


def test_a_worker_failure_restarts_from_the_checkpoint_with_the_same_losses(trained, shards, tmp_path):
    out = str(tmp_path / "train")
    assert run_train(shards, out, fault_injection_step=FAULT_STEP) == 0
    assert storage.read_json(storage.join(out, "_fault_injected"))["step"] == FAULT_STEP
    records = {r["step"]: r for r in _records(out)}
    # Steps up to the checkpoint come from the first attempt, the rest from the restarted one.
    assert [records[s]["resumes"] for s in range(1, STEPS + 1)] == [0] * CHECKPOINT_EVERY + [1] * (STEPS - CHECKPOINT_EVERY)
    resumed, reference = losses(out), losses(trained)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(CHECKPOINT_EVERY + 1, STEPS + 1):  # the steps run after the restart
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step


def test_rerunning_a_complete_stage_does_nothing(trained, shards):
    before = storage.read_bytes(storage.join(trained, "_manifest.json"))
    assert run_train(shards, trained) == 0
    assert storage.read_bytes(storage.join(trained, "_manifest.json")) == before


def test_input_output_and_checkpoints_on_s3(shards, ray_head, s3_bucket):
    from codemill.tokenize.pack import write_shards_from_texts
    from codemill.train import load_model

    data, out = f"{s3_bucket}/tokenize", f"{s3_bucket}/train"
    write_shards_from_texts(repetitive_corpus(), data, seq_len=65, validation_fraction=0.1)
    mf.write_manifest(data, mf.Manifest(stage="tokenize", status=mf.STATUS_COMPLETE, config_hash="test", config={}))
    assert run_train(data, out, steps=2, checkpoint_every=1, eval_every=2, **{"scaling.num_workers": 1}) == 0
    assert [r["step"] for r in _records(out)] == [1, 2]
    checkpoints = storage.list_files(f"{out}/ray_train", "train_state.json")
    assert {storage.read_json(c)["step"] for c in checkpoints} == {1, 2}
    model = load_model(f"{out}/export")
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 52_224)
