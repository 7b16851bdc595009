"""CodeGen's staged training at a small scale: Multi -> Mono against Multi trained as many steps more.

One command runs `benchmarks/codegen_staged.yaml` (dags/codegen.yaml's order) with the DAG runner and the real
stages: code of this machine's Python installation (stdlib and site-packages, at most --corpus-mb of each of
CodeGen-Multi's six languages, chosen at random) is crawled, filtered, deduplicated and tokenized once;
`train_multi` learns every language the corpus has, then two runs start from its export with a fresh optimizer
and schedule for the same --extra-steps on the same batch: `train_mono` on Python only (CodeGen-Mono) and
`train_multi_more` on the same languages as before (the control at equal compute). Every model (train_multi,
the starting point, too) is scored on the same held-out rows of each language, then generates HumanEval-X
Python and MTPB (multi-turn and single-turn) completions with codemill's serve engine in this process, and the
eval stage (`codemill eval --samples`, sandboxed, benchmark check first) scores them. Losses, tokens per
language, pass rates and wall times go to OUT/summary.json (written after every phase), which is printed.

    # this CPU machine: the tiny preset, a few steps, 2 problems of each benchmark (~14 min on 2 loaded cores)
    bash scripts/in-netns.sh .venv/bin/python benchmarks/codegen_staged.py --smoke --out /tmp/codegen_smoke
    # one H200 (the defaults, ~7 min): it has no sandbox for generated code, so it stops after generating.
    # The DAG runner starts a Ray head with `ray start` (on PATH) and submits jobs through its dashboard.
    PATH=/tmp/site/bin:$PATH python3 benchmarks/codegen_staged.py --generate-only --corpus /tmp/site \
        --out $OUT/codegen_staged
    # then, on a machine with the eval sandbox (scripts/setup-eval.sh), score the samples it brought back:
    bash scripts/in-netns.sh .venv/bin/python benchmarks/codegen_staged.py --score-only --out COPY_OF_THAT_OUT
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import shared_dashboard_url
from machine import cpu_model

from codemill import manifest as mf
from codemill.filter import rules
from codemill.languages import EXTENSION_TO_LANGUAGE
from codemill.logs import setup_logging

DAG = Path(__file__).resolve().with_suffix(".yaml")
MULTI_LANGUAGES = ("C", "C++", "Go", "Java", "JavaScript", "Python")
MODELS = ("train_mono", "train_multi_more", "train_multi")  # Mono, the control, and their starting point
BENCHMARKS = ("humaneval", "mtpb")
SUMMARY = "summary.json"


def samples_file(out: Path, model: str, benchmark: str) -> Path:
    # Flat in OUT: a device call brings back only files near the top of its output folder.
    return out / f"samples_{model}_{benchmark}.jsonl"

# Each run asks for half the GPU, so the two runs from train_multi's export train side by side on one GPU.
GPU_SHARE = 0.5
# Sizes: `gpu` for one H200 (measured there at 150 + 75 steps and 40 MTPB problems: 411 s, benchmarks/RESULTS.md;
# these defaults take longer); `smoke` checks the whole path on 2 CPU cores.
SIZES = {
    "gpu": {"preset": "125m", "seq_length": 2048, "multi_steps": 200, "extra_steps": 100, "batch": 32,
            "micro_batch": 16, "lr": 6e-4, "corpus_mb": 10.0, "humaneval": 164, "mtpb": 115, "max_tokens": 512,
            "engine_slots": 512},
    "smoke": {"preset": "tiny", "seq_length": 128, "multi_steps": 8, "extra_steps": 4, "batch": 4, "micro_batch": 4,
              "lr": 2e-3, "corpus_mb": 0.15, "humaneval": 2, "mtpb": 2, "max_tokens": 32, "engine_slots": 16},
}


def gather_corpus(roots: list[str], dest: Path, mb_per_language: float, seed: int) -> dict[str, dict]:
    """Copies files of the six languages under `roots` (sizes the filter keeps), at most `mb_per_language` of
    each, picked at random, to dest/<package>/<path>: each top-level package becomes one repository."""
    by_language: dict[str, list[tuple[Path, Path]]] = {}
    for root in map(Path, roots):
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(files):
                language = EXTENSION_TO_LANGUAGE.get(Path(name).suffix.lower())
                path = Path(folder) / name
                if language in MULTI_LANGUAGES and not path.is_symlink() and \
                        rules.MIN_SIZE_BYTES <= path.stat().st_size <= rules.MAX_SIZE_BYTES:
                    by_language.setdefault(language, []).append((root, path))
    rng = random.Random(seed)
    chosen: dict[str, dict] = {}
    for language, files in sorted(by_language.items()):
        rng.shuffle(files)
        budget, count = int(mb_per_language * 1e6), 0
        for root, path in files:
            size = path.stat().st_size
            if size > budget:
                continue
            rel = path.relative_to(root)
            target = dest / f"{root.name}-{rel.parts[0]}" / Path(*rel.parts[1:]) if len(rel.parts) > 1 \
                else dest / root.name / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            budget -= size
            count += 1
        chosen[language] = {"files": count, "bytes": int(mb_per_language * 1e6) - budget}
    return chosen


def overrides(a: argparse.Namespace, gpu: bool, pep8: bool) -> dict[str, list[str]]:
    """The DAG's sizes: tokenize's rows, and each train stage's model, steps, batch and schedule; the filter's
    PEP 8 step only where ruff is installed (the GPU machine's image has none)."""
    def train(steps: int) -> list[str]:
        scaling = (f"scaling={{num_workers: 1, use_gpu: true, gpus_per_worker: {GPU_SHARE}, cpus_per_worker: 2}}"
                   if gpu else "scaling={num_workers: 1, use_gpu: false, cpus_per_worker: 1}")
        warmup = max(1, steps // 10)
        return [f"model={{preset: '{a.preset}', seq_length: {a.seq_length}}}",
                f"deepspeed={{precision: {'bf16' if gpu else 'fp32'}, zero_stage: 2}}", scaling,
                f"steps={steps}", f"global_batch_size={a.batch}", f"micro_batch_size={a.micro_batch}",
                f"optimizer={{lr_max: {a.lr}, lr_min: {a.lr / 10:g}, warmup_steps: {warmup}, decay_steps: {steps}}}",
                f"log_every={max(1, steps // 20)}", f"eval_every={steps}", "eval_batches=4", f"checkpoint_every={steps}"]
    return {"filter": [f"format_python={str(pep8).lower()}"], "tokenize": [f"seq_len={a.seq_length + 1}"],
            "train_multi": train(a.multi_steps),
            "train_mono": train(a.extra_steps), "train_multi_more": train(a.extra_steps)}


def validation_losses(dag: Path, device: str, max_rows: int, batch: int) -> dict[str, dict[str, float]]:
    """Each model's mean next-token loss on the held-out rows of each language (the same rows for every model)."""
    import numpy as np
    import torch

    from codemill.tokenize.reader import ShardReader
    from codemill.train.data import make_batch
    from codemill.train.export import load_model
    from codemill.train.model_config import IGNORE_INDEX

    reader = ShardReader(str(dag / "tokenize"), split="validation")
    by_language: dict[str, list[int]] = {}
    for i in range(len(reader)):
        by_language.setdefault(reader.language(i), []).append(i)
    losses: dict[str, dict[str, float]] = {}
    for name in MODELS:
        model = load_model(str(dag / name / "export"), device=device)
        for language, rows in sorted(by_language.items()):
            total, count = 0.0, 0
            for start in range(0, min(len(rows), max_rows), batch):
                b = make_batch(reader, np.array(rows[start:min(start + batch, max_rows)]), reader.seq_len - 1)
                labels = torch.from_numpy(b.labels).to(device)
                with torch.no_grad(), torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):
                    total += model(torch.from_numpy(b.tokens).to(device), labels, reduction="none").float().sum().item()
                count += int((labels != IGNORE_INDEX).sum())
            losses.setdefault(name, {})[language] = round(total / count, 4)
    return losses


def generate(export: str, out: Path, model: str, a: argparse.Namespace, device: str) -> dict[str, float]:
    """HumanEval-X Python and MTPB (both modes) samples of one model, written as the eval stage's samples files;
    seconds per benchmark. n samples at --temperature (greedy by default), as the eval stage seeds them."""
    from codemill.eval import mtpb
    from codemill.eval.generate import EngineGenerator
    from codemill.eval.mtpb_generate import generate_samples
    from codemill.eval.mtpb_samples import samples_jsonl as mtpb_jsonl
    from codemill.eval.samples import Sample, build_jobs, samples_jsonl
    from codemill.humaneval import load_problems

    gen = EngineGenerator(export, device=device, max_batch_size=a.engine_slots)
    seconds = {}
    started = time.time()
    jobs = build_jobs(load_problems(["Python"]), ["Python"], list(range(a.humaneval)), "generation", [])
    texts = gen.generate([j.prompt for j in jobs], a.n, a.temperature, a.top_p, a.max_tokens, [j.stop for j in jobs],
                         seeds=[7919 * i for i in range(len(jobs))])
    samples = [Sample(j.task_id, text, i) for j, outs in zip(jobs, texts) for i, text in enumerate(outs)]
    samples_file(out, model, "humaneval").write_bytes(samples_jsonl(samples))
    seconds["humaneval"] = round(time.time() - started, 1)

    started = time.time()
    problems = mtpb.load_problems()
    cases = [(tid, t) for tid in list(problems)[:a.mtpb] for t in range(problems[tid].n_tests)]
    turns = generate_samples(problems, cases, [mtpb.MULTI_TURN, mtpb.SINGLE_TURN], a.n,
                             lambda prompts, counts, limits, stops, seeds: gen.generate(
                                 prompts, counts, a.temperature, a.top_p, [min(x, a.max_tokens) for x in limits],
                                 stops, seeds=seeds))
    samples_file(out, model, "mtpb").write_bytes(mtpb_jsonl(turns))
    seconds["mtpb"] = round(time.time() - started, 1)
    return seconds


def score(samples: Path, out: Path, benchmark: str) -> dict:
    """The eval stage on a samples file (sandboxed; the benchmark check of its tasks first); its counts."""
    from codemill.runner import stage_main

    sets = ["benchmark_check=run_if_missing", "charts=false", "metrics.k=[1]"]
    if benchmark == "humaneval":
        sets += ["languages=[Python]", "metrics.budget_k=[1]"]
    argv = ["--samples", str(samples), "--out", str(out), "--benchmark", "mtpb" if benchmark == "mtpb" else
            "humaneval-x"] + [x for s in sets for x in ("--set", s)]
    if stage_main("eval", argv) != 0:
        raise SystemExit(f"codemill eval {' '.join(argv)} failed")
    return mf.read_manifest(str(out)).counts


def train_record(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    keys = ("steps", "tokens", "epochs", "first_loss", "final_loss", "final_val_loss", "mean_tokens_per_s",
            "tokens_available", "init_from", "parameters")
    return {k: stats.get(k) for k in keys}


def machine() -> dict:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def save(summary: dict, out: Path) -> None:
    """Written after every phase, so a run cut short still leaves what it measured."""
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))


def run(a: argparse.Namespace, out: Path) -> dict:
    import torch

    from codemill.dag import run_dag

    gpu = not a.smoke and torch.cuda.is_available()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    summary: dict = {"machine": machine(), "args": vars(a), "seconds": {}}
    started = time.time()
    roots = sorted({sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")} | set(a.corpus))
    summary["corpus"] = {"roots": roots, "gathered": gather_corpus(roots, work / "corpus", a.corpus_mb, a.seed)}
    summary["seconds"]["corpus"] = round(time.time() - started, 1)

    started = time.time()
    os.environ["CODEGEN_STAGED_CORPUS"] = str(work / "corpus")
    summary["pep8"] = bool(shutil.which("ruff", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    # A head of its own (the DAG runner starts one), or the test suite's shared one for a smoke run.
    run_dag(str(DAG), str(work / "dag"), address=shared_dashboard_url(), overrides=overrides(a, gpu, summary["pep8"]))
    summary["seconds"]["dag"] = round(time.time() - started, 1)
    tokenize = json.loads((work / "dag" / "tokenize" / "stats.json").read_text())
    summary["tokens"] = {name: v["tokens"] for name, v in tokenize["languages"].items()}
    summary["train"] = {name: train_record(work / "dag" / name) for name in MODELS}
    summary["stage_seconds"] = {name: mf.read_manifest(str(work / "dag" / name)).timings["seconds"]
                                for name in ("crawl", "filter", "dedup", "tokenize", *MODELS)}
    started = time.time()
    summary["validation_loss"] = validation_losses(work / "dag", "cuda" if gpu else "cpu", a.val_rows, a.micro_batch)
    summary["seconds"]["validation_loss"] = round(time.time() - started, 1)
    save(summary, out)

    summary["seconds"]["generate"] = {}
    for name in MODELS:
        summary["seconds"]["generate"][name] = generate(str(work / "dag" / name / "export"), out, name, a,
                                                        "cuda" if gpu else "cpu")
        save(summary, out)
    return summary


def score_all(summary: dict, out: Path, work: Path) -> None:
    started = time.time()
    summary["pass"] = {name: {b: score(samples_file(out, name, b), work / "eval" / f"{name}_{b}", b)
                              for b in BENCHMARKS} for name in MODELS}
    summary["seconds"]["score"] = round(time.time() - started, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder: summary.json and the samples files")
    p.add_argument("--work", help="corpus, DAG outputs and eval outputs (emptied); default /tmp/codegen_staged, "
                   "a fresh temporary folder for --smoke")
    p.add_argument("--smoke", action="store_true", help="the tiny preset on CPUs, a few steps, 2 problems")
    p.add_argument("--generate-only", action="store_true", help="stop after generating (no eval sandbox here)")
    p.add_argument("--score-only", action="store_true", help="score the samples of an earlier --generate-only")
    p.add_argument("--corpus", action="append", default=[], help="more folders of code (repeatable)")
    p.add_argument("--corpus-mb", type=float, help="MB of code per language at most")
    p.add_argument("--preset", choices=["tiny", "125m", "350m"])
    p.add_argument("--seq-length", type=int)
    p.add_argument("--multi-steps", type=int, help="train_multi's steps")
    p.add_argument("--extra-steps", type=int, help="steps of train_mono and of train_multi_more")
    p.add_argument("--batch", type=int, help="sequences per step")
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate of every run (warm-up 10%%, cosine to lr/10)")
    p.add_argument("--val-rows", type=int, default=256, help="held-out rows per language for the losses")
    p.add_argument("--humaneval", type=int, help="HumanEval-X Python problems 0..N-1")
    p.add_argument("--mtpb", type=int, help="the first N MTPB problems (5 test cases each)")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, help="generation budget (MTPB: the problem's, capped at this)")
    p.add_argument("--engine-slots", type=int, help="sequences the serve engine decodes at once")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    args.work = args.work or (tempfile.mkdtemp(prefix="cm-codegen-smoke-") if args.smoke else "/tmp/codegen_staged")
    for key, value in SIZES["smoke" if args.smoke else "gpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.score_only:
        summary = json.loads((out / SUMMARY).read_text())
    else:
        summary = run(args, out)
    if not args.generate_only:
        score_all(summary, out, Path(args.work))
    summary["seconds"]["total" if not args.score_only else "total_score_only"] = round(time.time() - started, 1)
    save(summary, out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
