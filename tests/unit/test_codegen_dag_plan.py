"""`dags/codegen.yaml`, CodeGen's staged recipe, as a plan: it validates as written (`codemill dag show`), its
Mono stage reads Multi's export and reruns when Multi changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from codemill import manifest as mf
from codemill.config import ConfigError
from codemill.dag import load_dag, plan
from codemill.dag.plan import decide

REPO = Path(__file__).resolve().parents[2]
DAG = REPO / "dags" / "codegen.yaml"


def test_mono_reruns_when_multi_changes(tmp_path):
    """The init input is fingerprinted like any input: a new Multi means a new Mono."""
    planned = {ps.name: ps for ps in plan(load_dag(DAG), DAG, str(tmp_path))}
    for name in ("tokenize", "train_multi"):
        mf.write_manifest(planned[name].out, mf.Manifest(stage=planned[name].spec.stage, status=mf.STATUS_COMPLETE,
                                                         config_hash=planned[name].hash, config={}))
    mono = planned["train_mono"]
    records = {name: mf.input_record(mono.inputs[name], mf.require_complete(uri)) for name, uri in mono.upstream.items()}
    mf.write_manifest(mono.out, mf.Manifest(stage="train", status=mf.STATUS_COMPLETE, config_hash=mono.hash, config={},
                                            inputs=records))
    assert decide(mono) == (False, "complete for this config and input")
    mf.write_manifest(planned["train_multi"].out, mf.Manifest(stage="train", status=mf.STATUS_COMPLETE,
                                                              config_hash=planned["train_multi"].hash, config={},
                                                              counts={"steps": 1}))
    assert decide(mono) == (True, "input changed (init)")


def test_input_shorthand_is_the_flag_named_input(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - {name: tok, stage: tokenize}\n  - {name: tr, stage: train, input: tok}\n")
    with pytest.raises(ConfigError, match="stage 'tok' \\(tokenize\\) needs input 'input'"):
        load_dag(p)
    p.write_text("name: t\nstages:\n  - {name: d, stage: dedup, input: x}\n  - {name: x, stage: filter, input: y}\n"
                 "  - {name: y, stage: crawl}\n  - {name: tok, stage: tokenize, input: d}\n"
                 "  - {name: tr, stage: train, input: tok}\n  - {name: e, stage: eval, input: tr}\n")
    with pytest.raises(ConfigError, match="stage 'e' \\(eval\\): unknown input 'input'; eval takes \\['model'\\]"):
        load_dag(p)
    p.write_text(p.read_text().replace("  - {name: e, stage: eval, input: tr}\n", ""))
    assert {st.name: st.inputs for st in load_dag(p).stages}["tr"] == {"data": "tok"}


# --- the tiny CPU run ------------------------------------------------------------------------------------


def tiny(corpus: Path) -> dict[str, list[str]]:
    """The DAG shrunk to two CPU cores: a local corpus, the tiny preset, a few steps, a few problems."""
    train = ["model={preset: tiny, seq_length: 128}", "deepspeed={precision: fp32, zero_stage: 2}",
             "scaling={num_workers: 1, use_gpu: false, cpus_per_worker: 1}", "steps=3", "global_batch_size=4",
             "micro_batch_size=4", "optimizer={lr_max: 0.002, lr_min: 0.0002, warmup_steps: 1, decay_steps: 3}",
             "log_every=1", "eval_every=3", "eval_batches=1", "checkpoint_every=3"]
    humaneval = ["problems=[0]", "generation={n: 1, max_tokens: 16}", "metrics={k: [1], budget_k: [1]}"]
    mtpb = ["problems=[1]", "generation={n: 1, max_tokens: 16}", "metrics.k=[1]"]
    return {"crawl": [f"source={{type: local, paths: ['{corpus}'], expand_children: true}}"],
            "tokenize": ["seq_len=129"], "train_multi": train, "train_mono": train,
            "eval_multi_humaneval": humaneval, "eval_mono_humaneval": humaneval,
            "eval_multi_mtpb": mtpb, "eval_mono_mtpb": mtpb}
