"""Serve on one GPU, issue 23's whole benchmark in one run (each part guarded: a failure is recorded with its
traceback and the next part runs; the run ends within --max-seconds whatever happens, what it measured so far
written). The parts, in the order they run:

1. `http`: Ray Serve over HTTP, 1.3b bf16, streamed requests of 256 output tokens, prompts of mixed length,
   Poisson arrivals (each stream waits an exponential gap between its requests) at 1/8/32/64/128/256
   concurrent streams: output tokens/s, TTFT and time per output token p50/p99; and TTFT at concurrency 1
   of the same engine process without Serve (Serve's added TTFT). First, on a GPU nothing else has used, and
   in a process of its own (Ray, Serve and the engine processes go with it; if it overruns its time it is
   killed and the other parts still run);
2. `engine`: batch-1 decode at 1.3b bf16 (random weights, HumanEval-X prompts): the engine's ms/token and its
   captured decode step alone, against Hugging Face `generate` with a static cache + torch.compile on a
   GPT-2 of the same shape (the baseline), in the same run;
3. `int8`: INT8 weight-only against bf16, batch 1: ms/token, weight bytes, the logits' cosine on code prompts;
4. `memory_13b`: the 13b preset's weights on the GPU, its KV cache sized from what is left: bytes per
   sequence and the number of concurrent 2,048-token sequences; a few sequences decoded to prove it runs.

Results go to OUT_DIR as serve_http.json, serve_engine.json, serve_13b.json and serve_summary.json (targets
checked), each written after its part. Exit status 1 when a part failed, 3 when --max-seconds ran out.

    python benchmarks/serve_latency.py --out-dir benchmarks/results/serve          # the GPU run (RESULTS.md)
    bash scripts/in-netns.sh .venv/bin/python benchmarks/serve_latency.py --smoke --out-dir /tmp/x   # CPU check

Ray: RAY_ADDRESS's cluster when set (the tests' shared head), else a local one started here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from codemill import humaneval
from codemill.serve.decoder import Decoder
from codemill.serve.engine import Engine, GenerationParams
from codemill.tokenize.tokenizer import EOT_ID, VOCAB_SIZE, codegeex_tokenizer
from codemill.train.model import PRESETS, CodeGeeX

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def now() -> float:
    return time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Budget:
    """The run's time: a deadline for the whole run, and the share of what is left that a part may use."""

    # Seconds each part needs at least, kept for the parts after the one running (GPU run; --smoke scales them).
    NEEDS = {"engine": 60.0, "int8": 45.0, "memory_13b": 45.0, "http": 150.0}

    def __init__(self, seconds: float, scale: float = 1.0):
        self.deadline = time.monotonic() + seconds
        self.needs = {k: v * scale for k, v in self.NEEDS.items()}
        self.part_deadline = self.deadline

    def left(self) -> float:
        """Seconds left to the part running."""
        return max(self.part_deadline - time.monotonic(), 0.0)

    def start(self, part: str, later: list[str]) -> float:
        """Begin `part`: it may use what is left less what the parts after it need (when less is left than they
        all need, a share in proportion to its need). -> its seconds."""
        left = max(self.deadline - time.monotonic(), 0.0)
        need, reserve = self.needs[part], sum(self.needs[p] for p in later)
        seconds = left - reserve if left >= need + reserve else left * need / (need + reserve)
        self.part_deadline = time.monotonic() + seconds
        return seconds


class OutOfTime(RuntimeError):
    """A part's share of --max-seconds ran out: what it measured so far is kept."""


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_gpu() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    for mod in ("transformers", "triton", "ray"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def humaneval_prompts(tokenizer, count: int, max_tokens: int) -> list[list[int]]:
    """Tag line + prompt (SPEC §8's generation task) from each HumanEval-X language in turn: mixed lengths."""
    from codemill.languages import BY_NAME

    by_lang = [humaneval.read_records(humaneval.language_file(d)) for d in humaneval.LANGUAGE_DIRS]
    names = list(humaneval.LANGUAGE_DIRS.values())
    out = []
    for i in range(count):
        lang = i % len(by_lang)
        record = by_lang[lang][(i // len(by_lang)) % len(by_lang[lang])]
        out.append(tokenizer.encode(BY_NAME[names[lang]].tag + "\n" + record["prompt"]).ids[:max_tokens])
    return out


def random_model(preset: str, device: torch.device, dtype: torch.dtype) -> CodeGeeX:
    """A model with random weights made in `dtype` on `device`: an FP32 model first would need 52 GB at 13b,
    then the bf16 copy beside it (78 GB: more than an H100 has)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return CodeGeeX(PRESETS[preset]).eval()
    finally:
        torch.set_default_dtype(default)


def random_state(preset: str, device: torch.device, dtype: torch.dtype) -> dict:
    model = random_model(preset, device, dtype)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    del model
    return state


def make_engine(preset: str, state: dict, device, dtype, *, int8: bool = False, kv_bytes: int = 2**30,
                max_num_seqs: int = 8, attention: str = "auto") -> Engine:
    cfg = PRESETS[preset]
    decoder = Decoder(cfg, state, device, dtype, int8=int8, attention=attention)
    per_block = decoder.bytes_per_block(16)
    return Engine(decoder, None, eos_id=EOT_ID, valid_vocab=VOCAB_SIZE, num_blocks=max(kv_bytes // per_block, 8),
                  block_size=16, max_num_seqs=max_num_seqs, max_batched_tokens=max(2048, 4 * max_num_seqs),
                  graph_sizes=[1, 2, 4, 8])


def engine_generate(engine: Engine, prompt: list[int], new_tokens: int) -> tuple[list[int], float, float]:
    """Greedy, batch 1, end-of-text ignored -> (tokens, TTFT s, s per output token after the first)."""
    outs = []
    engine.add_request("bench", prompt, GenerationParams(max_tokens=new_tokens, temperature=0, ignore_eos=True),
                       outs.append)
    t0, first = now(), None
    while engine.has_work():
        engine.step()
        if first is None and outs:
            first = now()
    end = now()
    tokens = [t for o in outs for d in o.deltas for t in d.token_ids]
    return tokens, first - t0, (end - first) / max(len(tokens) - 1, 1)


def measure_engine(engine: Engine, prompts, new_tokens: int, repeats: int) -> dict:
    engine_generate(engine, prompts[0], 8)  # warm-up
    runs = [engine_generate(engine, prompts[i % len(prompts)], new_tokens) for i in range(repeats)]
    return {"ms_per_token": 1e3 * statistics.median(r[2] for r in runs),
            "ttft_ms": 1e3 * statistics.median(r[1] for r in runs)}


def graph_step_ms(engine: Engine) -> float | None:
    """The captured batch-1 decode step alone (no scheduling, no sampling)."""
    if 1 not in engine.runner.graphs:
        return None
    from cuda_timing import replay_ms

    return replay_ms(engine.runner.graphs[1][0], 200, warmup=10)


def prompt_logits(decoder: Decoder, ids: list[int], device) -> torch.Tensor:
    from codemill.serve.decoder import ForwardBatch, PrefillChunk

    bs, n = 16, len(ids)
    blocks = torch.arange(1, -(-n // bs) + 1, device=device)
    slots = torch.tensor([(p // bs + 1) * bs + p % bs for p in range(n)], device=device)
    batch = ForwardBatch(torch.tensor(ids, device=device), torch.arange(n, device=device), slots, 0,
                         torch.zeros(0, 1, dtype=torch.int32, device=device),
                         torch.zeros(0, dtype=torch.int32, device=device), [PrefillChunk(0, n, 0, blocks)])
    return decoder.forward(batch).float()


# ----------------------------------------------------------------------------- Hugging Face baseline
def hf_static_compile_ms(preset: str, device, dtype, prompt: list[int], new_tokens: int, repeats: int) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = PRESETS[preset]
    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_length, n_embd=cfg.hidden_size,
                        n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.ffn_hidden_size,
                        activation_function="gelu_new", bos_token_id=EOT_ID, eos_token_id=EOT_ID)
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT2LMHeadModel(config).to(dtype).eval()
    x = torch.tensor([prompt], device=device)

    def run(n: int) -> float:
        sync(device)
        t = now()
        with torch.inference_mode():
            out = model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=EOT_ID,
                                 cache_implementation="static")
        sync(device)
        assert out.shape[1] == x.shape[1] + n
        return now() - t

    t = now()
    run(new_tokens)
    run(2)  # compiles happen here
    warm = now() - t
    full = statistics.median(run(new_tokens) for _ in range(repeats))
    short = statistics.median(run(1) for _ in range(repeats))
    return {"ms_per_token": 1e3 * (full - short) / (new_tokens - 1), "warmup_s": warm}


# ----------------------------------------------------------------------------- parts
# What Hugging Face's baseline takes on an H100 (static cache + torch.compile of a 1.3b GPT-2): mostly compiling.
HF_BASELINE_NEEDS_S = 80.0


def engine_part(args, device, dtype, tokenizer, out: dict, budget: Budget) -> None:
    prompts = humaneval_prompts(tokenizer, args.prompts, 512)
    state = random_state(args.preset, device, dtype)
    engine = make_engine(args.preset, state, device, dtype)
    row = out.setdefault("batch1", {"preset": args.preset, "dtype": args.dtype, "new_tokens": args.new_tokens})
    row["weight_bytes"] = engine.decoder.weight_bytes()
    row["codemill"] = measure_engine(engine, prompts, args.new_tokens, args.repeats)
    row["codemill"]["graph_step_ms"] = graph_step_ms(engine)
    row["codemill"]["attention"] = engine.decoder.attention
    del engine, state
    free_gpu()
    if args.smoke:
        return
    if budget.left() < HF_BASELINE_NEEDS_S:
        raise OutOfTime(f"{budget.left():.0f} s left of this part: too little for Hugging Face's baseline")
    row["hf_static_compile"] = hf_static_compile_ms(args.preset, device, dtype, prompts[0], args.new_tokens,
                                                    args.repeats)
    row["codemill_over_hf"] = row["codemill"]["ms_per_token"] / row["hf_static_compile"]["ms_per_token"]


def int8_part(args, device, dtype, tokenizer, out: dict, budget: Budget) -> None:
    prompts = humaneval_prompts(tokenizer, args.prompts, 512)
    state = random_state(args.preset, device, dtype)
    q = out.setdefault("int8", {"preset": args.preset})
    for name, int8 in (("bf16", False), ("int8", True)):
        engine = make_engine(args.preset, state, device, dtype, int8=int8)
        q[name] = {"weight_bytes": engine.decoder.weight_bytes(),
                   **measure_engine(engine, prompts, args.new_tokens, args.repeats)}
        q[name]["logits"] = [prompt_logits(engine.decoder, p, device).cpu() for p in prompts[:args.cosine_prompts]]
        del engine
        free_gpu()
    cos = [float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())
           for a, b in zip(q["bf16"].pop("logits"), q["int8"].pop("logits"))]
    q["min_logit_cosine"], q["mean_min_cosine"] = min(cos), statistics.mean(cos)
    q["int8_over_bf16_ms"] = q["int8"]["ms_per_token"] / q["bf16"]["ms_per_token"]
    q["cosine_prompts"] = len(cos)


def memory_13b_part(args, device, dtype, tokenizer, out: dict, budget: Budget) -> None:
    from codemill.serve.loader import kv_cache_bytes

    preset = "tiny" if args.smoke else "13b"
    cfg = PRESETS[preset]
    t = now()
    state = random_state(preset, device, dtype)
    decoder = Decoder(cfg, state, device, dtype)
    del state
    free_gpu()
    kv_bytes = kv_cache_bytes(decoder, device, args.gpu_memory_utilization, 256, 16, 2**26 if args.smoke else None)
    per_block = decoder.bytes_per_block(16)
    engine = Engine(decoder, None, eos_id=EOT_ID, valid_vocab=VOCAB_SIZE, num_blocks=kv_bytes // per_block,
                    block_size=16, max_num_seqs=64, max_batched_tokens=4096, graph_sizes=[1, 8, 32, 64],
                    cuda_graphs=not args.smoke)
    per_token = per_block // 16
    blocks_per_2k = 2048 // 16
    out["13b"] = {"preset": preset, "weight_bytes": decoder.weight_bytes(), "kv_cache_bytes": decoder.cache_bytes(),
                  "kv_bytes_per_token": per_token, "kv_bytes_per_2k_sequence": per_token * 2048,
                  "concurrent_2k_sequences": (engine.blocks.num_blocks - 1) // blocks_per_2k,
                  "gpu_memory_utilization": args.gpu_memory_utilization, "build_s": now() - t,
                  "old_slot_cache_64_slots_bytes": per_token * 2048 * 64}
    # Prove it runs: a batch of 2k-token sequences (long prompts, a few tokens each).
    n = min(out["13b"]["concurrent_2k_sequences"], 8 if not args.smoke else 2)
    outs = []
    for i in range(n):
        engine.add_request(f"r{i}", [100 + i] * 2000, GenerationParams(max_tokens=8, temperature=0,
                                                                       ignore_eos=True), outs.append)
    t = now()
    engine.run_until_done()
    out["13b"]["ran"] = {"sequences": n, "prompt_tokens": 2000, "new_tokens": 8, "seconds": now() - t,
                         "finished": sum(1 for o in outs if o.finished and not o.error)}
    if device.type == "cuda":
        out["13b"]["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    del engine, decoder
    free_gpu()


# ----------------------------------------------------------------------------- HTTP
# How long requests already sent may run on once a level's time is up, before they are cancelled.
IN_FLIGHT_GRACE_S = 30.0


async def sse_request(host: str, port: int, path: str, body: dict) -> dict:
    """One streamed completion over a raw asyncio connection (no client library on the GPU image)."""
    data = json.dumps(body).encode()
    t0 = now()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        first, tokens = None, 0
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and first is None:
                    first = now()
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    finally:
        writer.close()
    end = now()
    return {"status": status, "ttft": (first or end) - t0, "tokens": tokens,
            "tpot": (end - first) / (tokens - 1) if first and tokens > 1 else None}


async def load_level(port: int, prompts: list[str], streams: int, requests: int, new_tokens: int,
                     mean_gap_s: float, seed: int, seconds: float) -> dict:
    """`streams` concurrent clients; each waits an exponential gap (Poisson arrivals) before each request. No
    request starts after `seconds`; those running then get IN_FLIGHT_GRACE_S more, then are cancelled (the
    level is marked `cut_short`)."""
    rng = random.Random(seed)
    queue = list(range(requests))
    results = []
    t = now()
    stop_at = t + seconds

    async def client(c: int) -> None:
        while queue and now() < stop_at:
            i = queue.pop()
            await asyncio.sleep(rng.expovariate(1 / mean_gap_s) if mean_gap_s else 0)
            body = {"model": "bench", "prompt": prompts[(i * 7 + c) % len(prompts)], "max_tokens": new_tokens,
                    "temperature": 0, "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
            try:
                results.append(await sse_request("127.0.0.1", port, "/v1/completions", body))
            except (OSError, ValueError, IndexError) as exc:  # refused, reset, or a malformed answer
                results.append({"status": -1, "error": repr(exc)[:200]})

    tasks = [asyncio.ensure_future(client(c)) for c in range(streams)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + IN_FLIGHT_GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = now() - t
    ok = [r for r in results if r["status"] == 200]
    ttft = [r["ttft"] * 1e3 for r in ok]
    tpot = [r["tpot"] * 1e3 for r in ok if r["tpot"] is not None]
    return {"concurrency": streams, "requests": len(results), "planned_requests": requests,
            "errors": len(results) - len(ok), "cut_short": bool(pending or queue),
            "output_tokens": sum(r["tokens"] for r in ok), "wall_s": wall,
            "tokens_per_s": sum(r["tokens"] for r in ok) / wall, "ttft_ms_p50": pct(ttft, 50),
            "ttft_ms_p99": pct(ttft, 99), "tpot_ms_p50": pct(tpot, 50), "tpot_ms_p99": pct(tpot, 99)}


async def engine_alone_ttft(export: str, options: dict, prompt_ids: list[int], repeats: int,
                            budget: Budget) -> dict:
    """TTFT at concurrency 1 of the same engine process a replica runs, driven from here (no HTTP, no Serve)."""
    from codemill.serve.engine_process import EngineProcess, EngineSpec

    engine = EngineProcess(EngineSpec(export, options), startup_timeout_s=max(budget.left(), 1.0))
    out = []
    try:
        for i in range(repeats + 1):  # the first is a warm-up
            t = now()
            first = None
            stream = engine.generate(f"alone-{i}", prompt_ids, GenerationParams(max_tokens=TTFT_TOKENS,
                                                                                temperature=0, ignore_eos=True))
            async for o in stream:
                if first is None and o.deltas:
                    first = now() - t
            if i:
                out.append(first * 1e3)
            if budget.left() <= 0:
                raise OutOfTime(f"the engine alone answered {len(out)} of {repeats} TTFT requests in time")
    finally:
        engine.stop()
    return {"ttft_ms_p50": statistics.median(out), "repeats": repeats}


# Output tokens of the requests that only measure time to first token.
TTFT_TOKENS = 8


def http_part(args, device, dtype, tokenizer, out: dict, save, budget: Budget) -> None:
    import ray
    from ray import serve

    from codemill.config import build_config
    from codemill.serve.cli import APP_NAME, deploy
    from codemill.serve.config import ServeConfig
    from codemill.serve.testing import write_random_export

    preset = "tiny" if args.smoke else args.preset
    export = tempfile.mkdtemp(prefix="cm-bench-export-")
    t = now()
    model = random_model(preset, device, dtype)  # initialised on the GPU: seconds, not a minute on the CPU
    write_random_export(export, PRESETS[preset], dtype=dtype, model=model)
    del model
    free_gpu()
    out.update({"preset": preset, "dtype": args.dtype, "new_tokens": args.http_new_tokens, "export_s": now() - t,
                "levels": [], "mean_gap_ms": args.mean_gap_ms})
    ids = humaneval_prompts(tokenizer, 40, 1024)
    texts = [tokenizer.decode(p) for p in ids]
    out["prompt_tokens"] = {"min": min(map(len, ids)), "median": statistics.median(map(len, ids)),
                            "max": max(map(len, ids))}
    # Serve's added TTFT: the same engine process alone first (the GPU is free), then through Serve.
    options = {"dtype": args.dtype, "device": device.type, "max_batch_size": 8,
               "gpu_memory_utilization": args.gpu_memory_utilization}
    alone = asyncio.run(engine_alone_ttft(export, options, ids[0], args.ttft_repeats, budget))
    save()
    port = args.port or free_port()
    model = {"name": "bench", "input": export, "dtype": args.dtype, "device": device.type, "replicas": 1,
             "gpus_per_replica": 1 if device.type == "cuda" else 0, "cpus_per_replica": 0.25 if args.smoke else 1,
             "max_ongoing_requests": 4096, "gpu_memory_utilization": args.gpu_memory_utilization}
    cfg = build_config(ServeConfig, {"models": [model], "max_batch_size": max(args.concurrency), "max_queue": 8192,
                                     "max_n": 1, "max_num_beams": 1, "port": port,
                                     "max_batched_tokens": max(2048, 2 * max(args.concurrency)),
                                     "engine_start_timeout_s": max(budget.left(), 1.0),
                                     "health_timeout_s": max(budget.left(), 1.0)})
    started_ray = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    if started_ray:
        ray.init(num_cpus=os.cpu_count(), num_gpus=1 if device.type == "cuda" else 0, include_dashboard=False)
    started = {"serve": False}
    try:
        t = now()
        url = deploy(cfg, started=started)  # `codemill serve`'s own path: Serve's proxy, the app, /healthz
        port = int(url.split(":")[2].split("/")[0])  # a Serve already running keeps its port
        out["deploy_s"] = now() - t
        asyncio.run(load_level(port, texts, 4, 8, 16, 0, 0, budget.left()))  # warm-up
        c1 = asyncio.run(load_level(port, [texts[0]], 1, args.ttft_repeats, TTFT_TOKENS, 0, 1, budget.left()))
        out["ttft_concurrency1"] = {"http_ms_p50": c1["ttft_ms_p50"], "engine_alone_ms_p50": alone["ttft_ms_p50"],
                                    "added_ms": c1["ttft_ms_p50"] - alone["ttft_ms_p50"], "prompt_tokens": len(ids[0])}
        save()
        levels = list(args.concurrency)
        for i, c in enumerate(levels):
            # The time left, shared equally by the levels still to run (each sends about two requests per stream;
            # what one leaves unused goes to the next).
            seconds = budget.left() / (len(levels) - i)
            level = asyncio.run(load_level(port, texts, c, max(2 * c, 8), args.http_new_tokens,
                                           args.mean_gap_ms / 1e3, c, seconds))
            out["levels"].append(level)
            print(json.dumps(level), flush=True)
            save()
            if budget.left() <= 0:
                raise OutOfTime(f"levels {levels[i + 1:]} did not run")
    finally:
        with contextlib.suppress(Exception):
            serve.delete(APP_NAME)
        if started["serve"]:
            with contextlib.suppress(Exception):
                serve.shutdown()
        if started_ray:
            ray.shutdown()


def summary(results: dict) -> dict:
    """Issue 23's targets against what ran."""
    s: dict = {}
    b1 = results["engine"].get("batch1", {})
    if "codemill_over_hf" in b1:
        s["batch1_over_hf_static_compile"] = {"value": b1["codemill_over_hf"], "target": "<= 0.333"}
    q = results["engine"].get("int8", {})
    if "int8_over_bf16_ms" in q:
        s["int8_over_bf16_ms"] = {"value": q["int8_over_bf16_ms"], "target": "<= 0.7"}
        s["int8_min_logit_cosine"] = {"value": q["min_logit_cosine"], "target": ">= 0.99"}
    levels = {lv["concurrency"]: lv for lv in results["http"].get("levels", [])}
    if 1 in levels and 64 in levels:
        s["tokens_per_s_64_over_1"] = {"value": levels[64]["tokens_per_s"] / levels[1]["tokens_per_s"],
                                       "target": ">= 25"}
        s["tpot_p99_64_over_1"] = {"value": levels[64]["tpot_ms_p99"] / levels[1]["tpot_ms_p99"], "target": "<= 3"}
        for c in (128, 256):
            if c in levels:
                s[f"tokens_per_s_{c}_over_64"] = {"value": levels[c]["tokens_per_s"] / levels[64]["tokens_per_s"],
                                                  "target": ">= 1"}
    t1 = results["http"].get("ttft_concurrency1")
    if t1:
        s["serve_added_ttft_ms"] = {"value": t1["added_ms"], "target": "<= 10"}
    m = results["13b"].get("13b")
    if m:
        s["13b_concurrent_2k_sequences"] = {"value": m["concurrent_2k_sequences"]}
        s["13b_kv_bytes_per_2k_sequence"] = {"value": m["kv_bytes_per_2k_sequence"]}
    for v in s.values():
        t = v.get("target")
        if t:
            op, bound = t.split()
            v["met"] = v["value"] <= float(bound) if op == "<=" else v["value"] >= float(bound)
    return s


# The order they run in: HTTP first, on a GPU nothing else has touched (and the headline figures first).
PARTS = ["http", "engine", "int8", "memory_13b"]
# Seconds a part run in its own process may exceed its budget (its own watchdog ends it first) before it is killed.
CHILD_GRACE_S = 20.0
CHILDREN: list[subprocess.Popen] = []  # killed by the watchdog with this process
# How long the parts after HTTP wait for its engine processes' GPU memory to be released.
GPU_RELEASE_WAIT_S = 60.0


def run_part_in_child(name: str, out_dir: Path, seconds: float, deadline: float) -> tuple[dict, str | None]:
    """Run one part as `serve_latency.py --parts NAME` in a process of its own with `seconds` for it: whatever it
    starts (Ray, Serve, engine processes) goes when it ends, and a call that blocks past its time (a replica that
    never comes up) is ended by killing it, so the parts after it still run. -> (its results, or what went wrong)."""
    key = {"http": "http", "memory_13b": "13b"}.get(name, "engine")
    folder = out_dir / f".{name}-part"
    # Its own watchdog ends it a little before its time is up (it starts a few seconds after this call), so
    # that it writes what it measured; this one kills it past its time, and before the run's own deadline.
    cmd = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--parts", name, "--out-dir", str(folder),
           "--max-seconds", f"{max(0.95 * seconds - 2, 1.0):.1f}", "--in-child"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    CHILDREN.append(proc)
    try:
        rc = proc.wait(timeout=max(min(seconds + CHILD_GRACE_S, deadline - time.monotonic() - 3), 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    path = folder / FILES[key]
    data = json.loads(path.read_text()) if path.exists() else {}
    shutil.rmtree(folder, ignore_errors=True)
    problem = None if rc == 0 else f"its process exited with status {rc}" + (
        " (out of time)" if rc in (3, -signal.SIGKILL) else "")
    return data, problem


def wait_gpu_released(device: torch.device, seconds: float) -> float:
    """Wait (at most `seconds`) until 90% of the GPU's memory is free again: the processes of a part run in a child
    release theirs as they die, after it. -> seconds waited."""
    if device.type != "cuda":
        return 0.0
    start = now()
    while now() - start < seconds:
        free, total = torch.cuda.mem_get_info(device)
        if free >= 0.9 * total:
            break
        time.sleep(0.5)
    return now() - start


FILES = {"engine": "serve_engine.json", "http": "serve_http.json", "13b": "serve_13b.json"}


def start_watchdog(seconds: float, on_expiry) -> None:
    """At `seconds`, whatever runs: `on_expiry()` (write what was measured), then exit with status 3. Ray's
    processes started here die with this one (fate sharing), and engine processes with their parents."""
    def expire() -> None:
        try:
            on_expiry()
        finally:
            for child in CHILDREN:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
            os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", required=True, help="folder for the JSON results (created)")
    p.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    p.add_argument("--max-seconds", type=float, default=None,
                   help="the whole run ends within this (default 440 on a GPU, 240 with --smoke): each part gets "
                        "what is left less what the parts after it need; past it, what was measured is written and "
                        "the process exits (status 3)")
    p.add_argument("--preset", default="1.3b")
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompts", type=int, default=10)
    p.add_argument("--cosine-prompts", type=int, default=10)
    p.add_argument("--http-new-tokens", type=int, default=256)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32, 64, 128, 256])
    p.add_argument("--mean-gap-ms", type=float, default=20.0, help="mean gap before each request of a stream")
    p.add_argument("--ttft-repeats", type=int, default=10)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--port", type=int, default=None, help="Serve's HTTP port (default: a free one)")
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the script, measures nothing")
    p.add_argument("--in-child", action="store_true", help=argparse.SUPPRESS)  # run_part_in_child's own process
    args = p.parse_args()
    if args.smoke:
        args.preset, args.dtype, args.new_tokens, args.http_new_tokens = "tiny", "fp32", 8, 8
        args.concurrency, args.prompts, args.repeats, args.ttft_repeats, args.cosine_prompts = [1, 4], 3, 1, 2, 2
    max_seconds = args.max_seconds or (240.0 if args.smoke else 440.0)
    budget = Budget(max_seconds, scale=0.25 if args.smoke else 1.0)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = DTYPES[args.dtype]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python " + " ".join(sys.argv), "machine": machine(device), "smoke": args.smoke,
            "max_seconds": max_seconds, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results = {"engine": dict(meta), "http": dict(meta), "13b": dict(meta)}
    running = {"part": None}

    def save() -> None:
        for key, name in FILES.items():
            (out_dir / name).write_text(json.dumps(results[key], indent=2, default=str) + "\n")
        (out_dir / "serve_summary.json").write_text(json.dumps({**meta, "targets": summary(results)}, indent=2) + "\n")

    def on_expiry() -> None:
        print(f"serve_latency: --max-seconds {max_seconds:g} ran out during {running['part']}; writing what was "
              f"measured and exiting", file=sys.stderr, flush=True)
        for key in results:
            results[key].setdefault("errors", {})["watchdog"] = f"--max-seconds {max_seconds:g} ran out during " \
                                                                f"{running['part']}"
        for _ in range(3):  # the main thread may be changing a result while this writes: try again
            try:
                save()
                return
            except RuntimeError:
                time.sleep(0.1)

    start_watchdog(max_seconds, on_expiry)
    tokenizer = codegeex_tokenizer()
    parts = {"engine": ("engine", lambda: engine_part(args, device, dtype, tokenizer, results["engine"], budget)),
             "int8": ("engine", lambda: int8_part(args, device, dtype, tokenizer, results["engine"], budget)),
             "memory_13b": ("13b", lambda: memory_13b_part(args, device, dtype, tokenizer, results["13b"], budget)),
             "http": ("http", lambda: http_part(args, device, dtype, tokenizer, results["http"], save, budget))}
    chosen = [name for name in PARTS if name in args.parts]
    failed = []
    for i, name in enumerate(chosen):
        key, fn = parts[name]
        running["part"] = name
        t = now()
        seconds = budget.start(name, chosen[i + 1:])
        print(f"serve_latency: {name} ({seconds:.0f} s)", file=sys.stderr, flush=True)
        try:
            if name == "http" and not args.in_child:
                measured, problem = run_part_in_child(name, out_dir, seconds, budget.deadline)
                results[key].update({k: v for k, v in measured.items() if k not in meta or k == "errors"})
                results[key]["gpu_release_wait_s"] = round(wait_gpu_released(device, GPU_RELEASE_WAIT_S), 1)
                if problem or "errors" in measured:  # its own errors came with its results
                    failed.append(name)
                    if "errors" not in measured:
                        results[key]["errors"] = {name: problem}
                    print(f"{name} failed: {problem or 'see its errors'}", file=sys.stderr, flush=True)
            else:
                fn()
        except OutOfTime as exc:
            failed.append(name)
            results[key].setdefault("errors", {})[name] = f"out of time: {exc}"
            print(f"{name} ran out of time: {exc}", file=sys.stderr, flush=True)
        except Exception as exc:
            failed.append(name)
            results[key].setdefault("errors", {})[name] = traceback.format_exc()[-3000:]
            print(f"{name} failed: {exc}", file=sys.stderr, flush=True)
        results[key].setdefault("part_seconds", {})[name] = round(now() - t, 1)
        free_gpu()
        save()
    print(json.dumps(summary(results), indent=2))
    if failed:
        print(f"serve_latency: failed: {', '.join(failed)} (see the errors in {out_dir})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
