"""`codemill dag show dags/codegen.yaml` validates CodeGen's staged recipe as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from codemill.dag import load_dag, plan
from codemill.dag.plan import entrypoint

REPO = Path(__file__).resolve().parents[2]
DAG = REPO / "dags" / "codegen.yaml"
MULTI = ["C", "C++", "Go", "Java", "JavaScript", "Python"]
EVALS = {"eval_multi_humaneval": ("train_multi", "humaneval-x"), "eval_mono_humaneval": ("train_mono", "humaneval-x"),
         "eval_multi_mtpb": ("train_multi", "mtpb"), "eval_mono_mtpb": ("train_mono", "mtpb")}


def test_codegen_dag_shows(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "codemill.cli", "dag", "show", str(DAG), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "train_mono train     config" in proc.stdout and "data <- tokenize, init <- train_multi" in proc.stdout
    planned = {ps.name: ps for ps in plan(load_dag(DAG), DAG, str(tmp_path))}
    assert list(planned)[:5] == ["crawl", "filter", "dedup", "tokenize", "train_multi"]
    multi, mono = planned["train_multi"].config, planned["train_mono"].config
    assert sorted(multi.data.languages) == sorted(MULTI) and mono.data.languages == ["Python"]
    assert multi.model == mono.model and multi.init_from is None and mono.init_from is None
    assert planned["train_mono"].inputs == {"data": str(tmp_path / "tokenize"),
                                            "init": str(tmp_path / "train_multi" / "export")}
    assert f"--input {tmp_path / 'tokenize'} --init {tmp_path / 'train_multi' / 'export'}" in \
        entrypoint(planned["train_mono"])
    for name, (model, benchmark) in EVALS.items():
        assert planned[name].spec.inputs == {"model": model}
        cfg = planned[name].config
        assert cfg.benchmark == benchmark
        if benchmark == "mtpb":
            assert cfg.mtpb_mode == "both"
        else:
            assert cfg.languages == ["Python"]


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
