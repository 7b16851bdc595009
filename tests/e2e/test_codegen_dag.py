"""`dags/codegen.yaml` shrunk to CPUs runs end to end: Multi, then Mono from Multi's export, both evaluated."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from codemill import manifest as mf
from codemill import storage
from codemill.dag import load_dag, run_dag

REPO = Path(__file__).resolve().parents[2]
DAG = REPO / "dags" / "codegen.yaml"
MULTI = ["C", "C++", "Go", "Java", "JavaScript", "Python"]
EVALS = {"eval_multi_humaneval": ("train_multi", "humaneval-x"), "eval_mono_humaneval": ("train_mono", "humaneval-x"),
         "eval_multi_mtpb": ("train_multi", "mtpb"), "eval_mono_mtpb": ("train_mono", "mtpb")}


# --- the tiny CPU run ------------------------------------------------------------------------------------

EXTENSIONS = {"C": "c", "C++": "cpp", "Go": "go", "Java": "java", "JavaScript": "js", "Python": "py"}
COMMENT = {"Python": "#"}  # the others comment with //
FUNCTION = {
    "C": "int {name}(int x) {{\n    int y = x * {a} + {b};\n    return y - {c};\n}}\n\n",
    "C++": "int {name}(int x) {{\n    auto y = x * {a} + {b};\n    return y - {c};\n}}\n\n",
    "Go": "func {name}(x int) int {{\n\ty := x*{a} + {b}\n\treturn y - {c}\n}}\n\n",
    "Java": "class K{name} {{\n    static int {name}(int x) {{\n        return x * {a} + {b} - {c};\n    }}\n}}\n\n",
    "JavaScript": "function {name}(x) {{\n  const y = x * {a} + {b};\n  return y - {c};\n}}\n\n",
    "Python": "def {name}(x):\n    y = x * {a} + {b}\n    return y - {c}\n\n\n",
}


def make_corpus(root: Path) -> Path:
    """Two repositories per language, two files each, of commented functions with their own names and
    numbers (so no file is a near duplicate of another, and words outweigh symbols as the filter wants)."""
    rng = random.Random(0)
    words = ["alpha", "bravo", "delta", "gamma", "kappa", "sigma", "omega", "theta", "lambda", "zeta"]
    for language, ext in EXTENSIONS.items():
        for r in range(2):
            repo = root / f"{ext}-repo{r}"
            repo.mkdir(parents=True)
            for f in range(2):
                body = "".join(f"{COMMENT.get(language, '//')} {' '.join(rng.choices(words, k=10))}\n"
                               + FUNCTION[language].format(name=f"{rng.choice(words)}_{rng.choice(words)}_{i}",
                                                           a=rng.randrange(100), b=rng.randrange(1000),
                                                           c=rng.randrange(1000))
                               for i in range(30))
                (repo / f"file{f}.{ext}").write_text(body)
    return root


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


@pytest.mark.timeout(1800)  # ten stages as Ray jobs on two cores: on a busy machine past the default 900 s
def test_tiny_codegen_dag_runs_multi_then_mono(tmp_path, ray_head):
    out = str(tmp_path / "codegen")
    ran = run_dag(str(DAG), out, address=ray_head.dashboard_url, overrides=tiny(make_corpus(tmp_path / "corpus")))
    assert sorted(ran) == sorted(st.name for st in load_dag(DAG).stages)
    assert ran.index("train_mono") > ran.index("train_multi")

    multi = storage.read_json(storage.join(out, "train_multi", "stats.json"))
    mono = storage.read_json(storage.join(out, "train_mono", "stats.json"))
    assert sorted(multi["tokens_available"]) == sorted(MULTI) and list(mono["tokens_available"]) == ["Python"]
    assert mono["tokens_available"]["Python"] == multi["tokens_available"]["Python"]
    assert multi["init_from"] is None and mono["init_from"] == storage.join(out, "train_multi", "export")
    assert mono["steps"] == multi["steps"] == 3
    assert mono["first_loss"] < multi["first_loss"]  # Mono starts from Multi's weights, not from scratch
    assert mf.read_manifest(storage.join(out, "train_mono")).inputs["init"]["stage"] == "train"
    for name, (model, benchmark) in EVALS.items():
        manifest = mf.read_manifest(storage.join(out, name))
        assert manifest.status == mf.STATUS_COMPLETE and f"/codegen/{model}" in manifest.inputs["model"]["uri"]
        assert manifest.config["benchmark"] == benchmark
        assert storage.exists(storage.join(out, name, "summary.json"))

    # Nothing changed: nothing runs.
    assert run_dag(str(DAG), out, address=ray_head.dashboard_url, overrides=tiny(tmp_path / "corpus")) == []
