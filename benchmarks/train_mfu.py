"""Training throughput and MFU: codemill's trainer (Ray Train + DeepSpeed) against a plain PyTorch loop on
a model of the same shape (Hugging Face GPT2LMHeadModel, bf16 autocast, SDPA, torch.compile, fused AdamW),
in one run, on the same shards of real code.

    python benchmarks/train_mfu.py --work /tmp/bench --corpus /usr/lib/python3.12 \
        --plain 350m --codemill 350m:1 --codemill 1.3b:1 --codemill 1.3b:2 --results results.json
    python benchmarks/train_mfu.py --smoke    # tiny preset on the CPU, 64-token rows, a few steps of each

MFU = achieved FLOP/s ÷ (GPUs × dense BF16 peak), FLOPs per token from codemill.train.flops for both
(the GPT-2 shape has the same layers, widths and vocabulary). Dropout is 0 in both (the comparison is of
the trainers), sequences are 2,048 tokens, the global batch is micro-batch × accumulation × GPUs. On a
machine without a GPU (`--smoke`) both run on the CPU in fp32 and MFU is not computed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SEQ_LENGTH = 2048
SMOKE_SEQ_LENGTH = 64
MAX_FILE_BYTES = 100_000  # SPEC §1's size limit
SKIP_WINDOWS = 2          # metric windows dropped as warm-up (compilation, allocator growth)


def log(msg: str) -> None:
    print(f"[train_mfu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_shards(corpus: list[str], out: str, max_bytes: int, seq_length: int) -> dict:
    """Tokenize the code files under `corpus` into the tokenize stage's shards (+ a complete manifest)."""
    from codemill import manifest as mf
    from codemill.languages import EXTENSION_TO_LANGUAGE
    from codemill.tokenize.pack import write_shards_from_texts

    if (Path(out) / mf.MANIFEST_NAME).exists():
        return json.loads((Path(out) / "manifest.json").read_text())
    texts: dict[str, list[str]] = {}
    total = 0
    for root in corpus:
        for path in sorted(Path(root).rglob("*")):
            language = EXTENSION_TO_LANGUAGE.get(path.suffix.lower())
            if language is None or not path.is_file() or not 1_000 <= path.stat().st_size <= MAX_FILE_BYTES:
                continue
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            texts.setdefault(language, []).append(text)
            total += len(text)
            if total >= max_bytes:
                break
        if total >= max_bytes:
            break
    log(f"tokenizing {sum(map(len, texts.values()))} files, {total / 1e6:.1f} MB: "
        f"{ {k: len(v) for k, v in texts.items()} }")
    dataset = write_shards_from_texts(texts, out, seq_len=seq_length + 1)
    mf.write_manifest(out, mf.Manifest(stage="tokenize", status=mf.STATUS_COMPLETE, config_hash="benchmark",
                                       config={"corpus": corpus, "max_bytes": max_bytes}))
    return dataset


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def plain_loop(preset: str, shards: str, micro_batch: int, accumulation: int, steps: int, warmup: int,
               seq_length: int = SEQ_LENGTH) -> dict:
    """The baseline: one GPU, GPT2LMHeadModel of the preset's shape, compiled, bf16 autocast, fused AdamW
    (on a machine without a GPU: the CPU, fp32, eager)."""
    import contextlib

    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from codemill.tokenize.reader import ShardReader
    from codemill.train import flops
    from codemill.train.model import PRESETS

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    cfg = PRESETS[preset]
    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=seq_length, n_embd=cfg.hidden_size,
                        n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.ffn_hidden_size,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").to(device).train()
    if cuda:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), fused=cuda)
    reader = ShardReader(shards, split="train")
    order = reader.rank_indices(0, 1, 0, 0)
    rows_per_step = micro_batch * accumulation

    def step(n: int) -> torch.Tensor:
        idx = order[(n * rows_per_step) % (len(order) - rows_per_step):][:rows_per_step]
        rows = torch.from_numpy(reader.rows(idx)[:, :seq_length].astype(np.int64))
        rows = rows.pin_memory().to(device, non_blocking=True) if cuda else rows
        total = torch.zeros((), device=device)
        for mb in rows.split(micro_batch):
            with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
                loss = model(input_ids=mb, labels=mb).loss / accumulation
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    for n in range(warmup):
        step(n)
    synchronize()
    start = time.perf_counter()
    losses = [step(warmup + n) for n in range(steps)]
    synchronize()
    seconds = time.perf_counter() - start
    tokens_per_s = steps * rows_per_step * seq_length / seconds
    fpt = flops.FORWARD_AND_BACKWARD * flops.forward_flops_per_token(
        cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size, cfg.vocab_size, seq_length)
    peak = flops.peak_flops(gpu_name())
    result = {"trainer": "plain PyTorch (GPT2LMHeadModel)", "preset": preset, "gpus": 1 if cuda else 0,
              "parameters": sum(p.numel() for p in model.parameters()), "micro_batch": micro_batch,
              "accumulation": accumulation, "tokens_per_s": tokens_per_s,
              "mfu": flops.mfu(tokens_per_s, fpt, peak, 1) if peak else None, "final_loss": float(losses[-1])}
    return result


def codemill_run(preset: str, gpus: int, shards: str, work: str, micro_batch: int, accumulation: int,
                 steps: int, log_every: int, lr_max: float, zero_stage: int, seq_length: int = SEQ_LENGTH) -> dict:
    """The stage itself, through its CLI entry point: Ray Train workers, DeepSpeed, checkpoints, export.
    `gpus` 0: one worker on the CPU, fp32, eager."""
    from codemill import storage
    from codemill.runner import stage_main
    from codemill.train import metrics

    out = str(Path(work) / f"codemill-{preset}-{gpus}gpu-z{zero_stage}")
    on_gpu = gpus > 0
    overrides = {
        "model.preset": preset, "model.seq_length": seq_length, "model.dropout": 0.0, "model.compile": on_gpu,
        "deepspeed.precision": "bf16" if on_gpu else "fp32", "deepspeed.zero_stage": zero_stage,
        "scaling.num_workers": max(gpus, 1), "scaling.use_gpu": on_gpu, "scaling.cpus_per_worker": 4 if on_gpu else 1,
        "steps": steps, "micro_batch_size": micro_batch,
        "global_batch_size": micro_batch * accumulation * max(gpus, 1),
        "optimizer.lr_max": lr_max, "optimizer.lr_min": lr_max / 10, "optimizer.warmup_steps": max(1, steps // 10),
        "optimizer.decay_steps": steps, "log_every": log_every, "eval_every": steps, "eval_batches": 4,
        "checkpoint_every": steps,
    }
    argv = ["--input", shards, "--out", out, "--force"]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    rc = stage_main("train", argv)
    wall = time.perf_counter() - started
    if rc != 0:
        raise RuntimeError(f"codemill train exited with {rc}")
    records = metrics.read_records(storage.join(out, metrics.METRICS_FILE))
    windows = sorted({r["step"]: r for r in records}.values(), key=lambda r: r["step"])
    windows = [r for r in windows if r["step"] % log_every == 0][SKIP_WINDOWS:] or windows
    stats = storage.read_json(storage.join(out, "stats.json"))
    mfus = [r["mfu"] for r in windows if r.get("mfu") is not None]
    return {"trainer": f"codemill (Ray Train + DeepSpeed ZeRO-{zero_stage})", "preset": preset, "gpus": gpus,
            "parameters": stats["parameters"], "micro_batch": micro_batch, "accumulation": accumulation,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in windows),
            "mfu": statistics.median(mfus) if mfus else None,
            "first_loss": records[0]["loss"], "final_loss": records[-1]["loss"],
            "final_val_loss": stats["final_val_loss"], "steps": steps, "stage_wall_s": wall,
            "loss_curve": [(r["step"], round(r["loss"], 4)) for r in records]}


def table(results: list[dict]) -> str:
    lines = ["| trainer | model | GPUs | micro-batch × accum. | tokens/s | MFU | loss (first → last) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        loss = (f"{r['first_loss']:.2f} → {r['final_loss']:.2f}" if "first_loss" in r
                else f"{r['final_loss']:.2f}")
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['trainer']} | {r['preset']} ({r['parameters'] / 1e6:.0f}M) | {r['gpus']} | "
                     f"{r['micro_batch']} × {r['accumulation']} | {r['tokens_per_s']:,.0f} | "
                     f"{mfu} | {loss} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work")
    p.add_argument("--corpus", action="append", default=[], help="folders of code to tokenize (repeatable)")
    p.add_argument("--corpus-bytes", type=int, default=40_000_000)
    p.add_argument("--plain", action="append", default=[], metavar="PRESET")
    p.add_argument("--codemill", action="append", default=[], metavar="PRESET:GPUS[:ZERO]")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--accumulation", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--lr-max", type=float, default=3e-4)
    p.add_argument("--results", help="JSON file the results are appended to")
    p.add_argument("--smoke", action="store_true",
                   help="tiny preset on the CPU (codemill:0 GPUs and the plain loop), 4 steps, 300 KB of codemill/")
    args = p.parse_args()
    seq_length = SEQ_LENGTH
    if args.smoke:
        seq_length, args.steps, args.log_every, args.micro_batch, args.accumulation = SMOKE_SEQ_LENGTH, 4, 1, 2, 1
        args.work = args.work or tempfile.mkdtemp(prefix="cm-train-mfu-smoke-")
        args.corpus = args.corpus or [str(REPO_ROOT / "codemill")]
        args.corpus_bytes = 300_000
        args.codemill, args.plain = args.codemill or ["tiny:0"], args.plain or ["tiny"]
        args.results = args.results or str(Path(args.work) / "train_mfu.jsonl")
    missing = [flag for flag, value in (("--work", args.work), ("--corpus", args.corpus), ("--results", args.results))
               if not value]
    if missing:
        p.error(f"{', '.join(missing)} required (or --smoke)")

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast on shared hosts
    shards = str(Path(args.work) / "shards")
    dataset = make_shards(args.corpus, shards, args.corpus_bytes, seq_length)
    log(f"shards: {dataset['splits']['train']['rows']} train rows; device: {gpu_name()}")
    results = []

    def keep(result: dict) -> None:  # written at once: a run cut short keeps what it measured
        result["gpu"] = gpu_name()
        result["smoke"] = args.smoke
        results.append(result)
        with open(args.results, "a") as f:
            f.write(json.dumps(result) + "\n")
        log(json.dumps({k: v for k, v in result.items() if k != "loss_curve"}))

    failed = []
    for spec in args.codemill:
        preset, gpus, *zero = spec.split(":")
        log(f"codemill {spec}")
        try:
            keep(codemill_run(preset, int(gpus), shards, args.work, args.micro_batch, args.accumulation,
                              args.steps, args.log_every, args.lr_max, int(zero[0]) if zero else 2, seq_length))
        except Exception as exc:
            log(f"codemill {spec} failed: {exc!r}")
            failed.append(spec)
    for preset in args.plain:
        log(f"plain loop {preset}")
        keep(plain_loop(preset, shards, args.micro_batch, args.accumulation, steps=max(1, args.steps // 2),
                        warmup=1 if args.smoke else 3, seq_length=seq_length))
    print(table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
