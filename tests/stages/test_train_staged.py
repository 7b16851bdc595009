"""Staged training on Ray Train (CPU, tiny preset): a run started from another run's export continues where
that run ended, moves on from it, and, restarted, resumes from its own checkpoint, never from the export."""

from __future__ import annotations

import math

import pytest
import torch

from codemill import manifest as mf
from codemill import storage

FIRST_STEPS = 20   # the exporting run: long enough for its loss to settle
SECOND_STEPS = 6
CHECKPOINT_EVERY = 2
FAULT_STEP = 3     # after the checkpoint of step 2
BATCH = 16         # rows a step: enough that one step's loss is close to the next's

# No dropout, so a logged loss depends on the weights and the rows alone.
SETTINGS = {
    "model.preset": "tiny", "model.seq_length": 64, "model.dropout": 0.0,
    "scaling.num_workers": 1, "scaling.use_gpu": False, "scaling.cpus_per_worker": 1,
    "deepspeed.precision": "fp32", "deepspeed.zero_stage": 2,
    "global_batch_size": BATCH, "micro_batch_size": BATCH // 2,
    "optimizer.lr_max": 3e-3, "optimizer.lr_min": 1e-4, "optimizer.warmup_steps": 2,
    "log_every": 1, "eval_every": 100, "eval_batches": 1, "checkpoint_every": CHECKPOINT_EVERY,
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from codemill.tokenize.pack import write_shards_from_texts

    out = str(tmp_path_factory.mktemp("tokenize"))
    python = [("def add(a, b):\n    return a + b\n\n\n" * 12) + f"print(add({i}, {i + 1}))\n" for i in range(30)]
    go = [("func add(a int, b int) int {\n\treturn a + b\n}\n\n" * 12) + f"// {i}\n" for i in range(30)]
    write_shards_from_texts({"Python": python, "Go": go}, out, seq_len=65, validation_fraction=0.1)
    mf.write_manifest(out, mf.Manifest(stage="tokenize", status=mf.STATUS_COMPLETE, config_hash="test", config={}))
    return out


def run_train(shards: str, out: str, steps: int, *, init: str | None = None, **extra) -> int:
    from codemill.runner import stage_main

    argv = ["--input", shards, "--out", out] + (["--init", init] if init else [])
    for key, value in {**SETTINGS, "steps": steps, "optimizer.decay_steps": steps, **extra}.items():
        argv += ["--set", f"{key}={value}"]
    return stage_main("train", argv)


def records(out: str) -> list[dict]:
    from codemill.train.metrics import METRICS_FILE, read_records

    return read_records(storage.join(out, METRICS_FILE))


def weights(export: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(storage.read_bytes(storage.join(export, "model.safetensors")))


@pytest.fixture(scope="module")
def multi(shards, ray_head, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("multi"))
    assert run_train(shards, out, FIRST_STEPS) == 0
    return out


@pytest.fixture(scope="module")
def mono(shards, multi, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mono"))
    assert run_train(shards, out, SECOND_STEPS, init_from=storage.join(multi, "export")) == 0
    return out


def test_a_run_from_an_export_starts_where_the_export_ended(multi, mono):
    from codemill.train.schedule import learning_rate

    first, second = records(multi), records(mono)
    fresh_loss, exported_loss = first[0]["loss"], first[-1]["loss"]
    assert fresh_loss == pytest.approx(math.log(52_224), abs=1.0)
    assert exported_loss < fresh_loss / 3, (fresh_loss, exported_loss)
    # Its first loss is the export's weights on the first rows: where the exporting run ended, not a fresh start.
    assert second[0]["loss"] == pytest.approx(exported_loss, rel=0.10), (exported_loss, second[0]["loss"])
    # Steps, tokens and the schedule start from 0 (a fresh warm-up), and training moves the weights on.
    assert [r["step"] for r in second] == list(range(1, SECOND_STEPS + 1))
    assert second[0]["tokens"] == first[0]["tokens"] and second[0]["resumes"] == 0
    assert second[0]["lr"] == pytest.approx(learning_rate(0, 3e-3, 1e-4, 2, SECOND_STEPS), rel=1e-12)
    before, after = weights(storage.join(multi, "export")), weights(storage.join(mono, "export"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert storage.read_json(storage.join(mono, "export", "config.json"))["step"] == SECOND_STEPS
    stats = storage.read_json(storage.join(mono, "stats.json"))
    assert stats["init_from"] == storage.join(multi, "export") and stats["steps"] == SECOND_STEPS
    assert set(stats["tokens_available"]) == {"Python", "Go"}
    assert mf.read_manifest(mono).counts["epochs"] == stats["epochs"] > 0


def test_a_restarted_run_resumes_from_its_own_checkpoint_not_the_export(shards, multi, mono, tmp_path):
    """The run fails after its checkpoint of step 2 with no restarts left; the export's weights are then
    removed, so a run that reloaded them could not start. The rerun (the same config, the same inputs)
    continues from step 2 with the losses of the uninterrupted run."""
    import shutil

    copy = tmp_path / "multi"  # a train output of its own, so removing its weights leaves `multi` intact
    shutil.copytree(multi, copy, ignore=shutil.ignore_patterns("ray_train"))
    export = str(copy / "export")
    out = str(tmp_path / "mono")
    settings = {"init_from": export, "fault_injection_step": FAULT_STEP, "run.max_failures": 0}
    with pytest.raises(Exception, match=f"fault injected at step {FAULT_STEP}"):
        run_train(shards, out, SECOND_STEPS, **settings)
    assert mf.read_manifest(out) is None
    (copy / "export" / "model.safetensors").unlink()

    assert run_train(shards, out, SECOND_STEPS, **settings) == 0
    resumed = {r["step"]: r for r in records(out)}
    assert sorted(resumed) == list(range(1, SECOND_STEPS + 1))
    assert [resumed[s]["resumes"] for s in resumed] == [0] * CHECKPOINT_EVERY + [1] * (SECOND_STEPS - CHECKPOINT_EVERY)
    reference = {r["step"]: r["loss"] for r in records(mono)}
    for step in range(1, SECOND_STEPS + 1):
        assert resumed[step]["loss"] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step


def test_languages_train_on_their_rows_only(shards, multi, tmp_path):
    out = str(tmp_path / "python")
    assert run_train(shards, out, 2, init=storage.join(multi, "export"), eval_every=2,
                     **{"data.languages": "[Python]"}) == 0
    last = records(out)[-1]
    assert "val_loss/Python" in last and "val_loss/Go" not in last  # validated on its languages too
    stats = storage.read_json(storage.join(out, "stats.json"))
    assert list(stats["tokens_available"]) == ["Python"]
    assert stats["epochs"] == pytest.approx(2 * BATCH / stats["data"]["rows"])
    assert mf.read_manifest(out).inputs["init"]["stage"] == "train"
