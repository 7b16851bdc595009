"""Serve latency on one GPU, side by side in one run (issue 12's benchmark):

1. the memory-bandwidth floor: HBM bandwidth measured by a large device-to-device copy, and weight bytes
   divided by it (the fastest a batch-1 decode step can read every weight once);
2. batch-1 decode ms/token, presets 350m and 1.3b, bf16, random weights, HumanEval-X prompts:
   codemill's engine (a whole engine step, and the captured decode graph alone) against Hugging Face
   `generate` on a `GPT2LMHeadModel` of the same shape and dtype, plain and with a static cache +
   `torch.compile` (a failure is recorded, not fatal); the faster HF mode is the baseline;
3. INT8 weight-only against bf16: weight memory, ms/token, greedy agreement and logit cosine on the prompts;
4. HTTP through Ray Serve (1.3b): streamed requests of 256 output tokens at 1/8/32/64/128 concurrent:
   output tokens/s, TTFT and time per output token p50/p99, and Serve's added TTFT at concurrency 1 over
   the engine alone (the same engine class, in process, same prompt).

Results go to benchmarks/results/serve_latency.json (written after each part, so a timeout keeps what ran).

    python benchmarks/serve_latency.py                                 # the GPU run (see RESULTS.md)
    bash scripts/in-netns.sh .venv/bin/python benchmarks/serve_latency.py --smoke   # CPU check of the script
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from cuda_timing import replay_ms

from codemill import humaneval
from codemill.serve.decoder import Decoder
from codemill.serve.engine import Engine, GenerationParams
from codemill.tokenize.tokenizer import EOT_ID, VOCAB_SIZE, codegeex_tokenizer
from codemill.train.model import PRESETS, CodeGeeX

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
HF_REFERENCE_1P3B_MS = 11.6       # HF generate, 1.3b, batch 1, one H200 (the reference point)
GPT_FAST_REFERENCE_1P3B_MS = 1.61  # a gpt-fast-style decoder, same shape and GPU


# ----------------------------------------------------------------------------- helpers
def now() -> float:
    return time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    multiprocessors=p.multi_processor_count)
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def humaneval_prompts(tokenizer, count: int, max_tokens: int) -> list[list[int]]:
    """Tag line + prompt (SPEC §8's generation task) from each HumanEval-X language in turn."""
    by_lang = [humaneval.read_records(humaneval.language_file(d)) for d in humaneval.LANGUAGE_DIRS]
    from codemill.languages import BY_NAME

    names = list(humaneval.LANGUAGE_DIRS.values())
    out = []
    for i in range(count):
        lang = i % len(by_lang)
        record = by_lang[lang][i // len(by_lang)]
        ids = tokenizer.encode(BY_NAME[names[lang]].tag + "\n" + record["prompt"]).ids
        out.append(ids[:max_tokens])
    return out


def hbm_bandwidth(device: torch.device, gib: float) -> dict:
    """Bytes read + written per second by a large device-to-device copy (the bandwidth decoding can use)."""
    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    t = now()
    for _ in range(reps):
        dst.copy_(src)
    sync(device)
    seconds = (now() - t) / reps
    del src, dst
    return {"copy_gib": gib, "seconds_per_copy": seconds, "bytes_per_s": 2 * n * 2 / seconds}


def build_model(preset: str, device: torch.device, dtype: torch.dtype) -> CodeGeeX:
    torch.manual_seed(0)
    with torch.device(device):
        model = CodeGeeX(PRESETS[preset])
    return model.to(dtype).eval()


# ----------------------------------------------------------------------------- codemill's engine
def make_engine(cfg, state, device, dtype, int8: bool, slots: int, compile: bool = False) -> Engine:
    decoder = Decoder(cfg, state, device, dtype, int8=int8, max_slots=slots, compile=compile)
    return Engine(decoder, None, eos_id=EOT_ID, valid_vocab=VOCAB_SIZE, batch_buckets=[1, 2, 4, 8])


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


def graph_step_ms(engine: Engine, reps: int = 200) -> float | None:
    """The captured batch-1 decode step alone (no scheduling, no sampling): the GPU-bound floor of the engine."""
    runner = engine.runner
    if not runner.use_graphs:
        return None
    graph, _ = runner.graphs[(1, runner.length_bucket(512, 1))]
    return replay_ms(graph, reps, warmup=10)


def measure_engine(engine, prompts, new_tokens, repeats: int) -> dict:
    engine_generate(engine, prompts[0], 8)  # warm-up
    runs = [engine_generate(engine, prompts[i % len(prompts)], new_tokens) for i in range(repeats)]
    return {"ms_per_token": 1e3 * statistics.median(r[2] for r in runs),
            "ttft_ms": 1e3 * statistics.median(r[1] for r in runs)}


# ----------------------------------------------------------------------------- Hugging Face baseline
def hf_model(cfg, device, dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_length, n_embd=cfg.hidden_size,
                        n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.ffn_hidden_size,
                        activation_function="gelu_new", bos_token_id=EOT_ID, eos_token_id=EOT_ID)
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT2LMHeadModel(config)
    return model.to(dtype).eval()


def hf_generate_s(model, prompt: torch.Tensor, new_tokens: int, **kwargs) -> float:
    sync(prompt.device)
    t = now()
    with torch.inference_mode():
        out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=EOT_ID, **kwargs)
    sync(prompt.device)
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return now() - t


def measure_hf(model, prompt: list[int], new_tokens: int, device, repeats: int, **kwargs) -> dict:
    x = torch.tensor([prompt], device=device)
    t_warm = now()
    hf_generate_s(model, x, new_tokens, **kwargs)  # warm-up (compiles, in the compiled mode)
    hf_generate_s(model, x, 2, **kwargs)
    warm = now() - t_warm
    full = statistics.median(hf_generate_s(model, x, new_tokens, **kwargs) for _ in range(repeats))
    short = statistics.median(hf_generate_s(model, x, 1, **kwargs) for _ in range(repeats))
    # Prefill and the first token cancel out: what remains is the per-token decode time.
    return {"ms_per_token": 1e3 * (full - short) / (new_tokens - 1), "warmup_s": warm}


def hf_modes(cfg, device, dtype, prompt, new_tokens, repeats, compile_mode: bool) -> dict:
    out = {}
    model = hf_model(cfg, device, dtype)
    try:
        out["plain"] = measure_hf(model, prompt, new_tokens, device, repeats)
    except Exception as exc:
        out["plain"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    if compile_mode:
        try:
            # Hugging Face's fast path: with a static KV cache, `generate` compiles the forward itself
            # (its compile_config; compiling model.forward by hand as well breaks on CUDA-graph reuse).
            out["static_compile"] = measure_hf(model, prompt, new_tokens, device, repeats,
                                               cache_implementation="static")
        except Exception as exc:
            out["static_compile"] = {"error": f"{type(exc).__name__}: {exc}"[:500],
                                     "trace_tail": traceback.format_exc()[-800:]}
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- INT8
def greedy_agreement(a: Engine, b: Engine, prompts, new_tokens: int) -> dict:
    same_tokens, prefix, total = 0, 0, 0
    for p in prompts:
        ta, _, _ = engine_generate(a, p, new_tokens)
        tb, _, _ = engine_generate(b, p, new_tokens)
        same_tokens += sum(x == y for x, y in zip(ta, tb))
        prefix += next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), len(ta))
        total += len(ta)
    return {"token_match": same_tokens / total, "common_prefix_fraction": prefix / total,
            "prompts": len(prompts), "tokens_each": new_tokens}


def logit_cosine(a: Engine, b: Engine, prompts, device) -> float:
    cos = []
    for p in prompts:
        args = (torch.tensor([p], device=device), torch.tensor([len(p)], device=device),
                torch.tensor([0], device=device))
        la, lb = a.decoder.prefill(*args).float(), b.decoder.prefill(*args).float()
        cos.append(float(torch.nn.functional.cosine_similarity(la, lb, dim=-1).mean()))
    return min(cos)


# ----------------------------------------------------------------------------- the engine part
def engine_part(args, device, dtype, tokenizer, results, save) -> None:
    bw = hbm_bandwidth(device, args.copy_gib)
    results["hbm"] = bw
    save()
    prompts = humaneval_prompts(tokenizer, args.prompts, 512)
    results["prompt_tokens"] = [len(p) for p in prompts]
    for preset in args.presets:
        cfg = PRESETS[preset]
        row: dict = {"preset": preset, "dtype": args.dtype, "layers": cfg.num_layers, "hidden": cfg.hidden_size}
        results.setdefault("decode", {})[preset] = row
        model = build_model(preset, device, dtype)
        state = model.state_dict()
        row["parameters"] = model.num_parameters()
        engine = make_engine(cfg, state, device, dtype, int8=False, slots=8)
        row["weight_bytes"] = engine.decoder.weight_bytes()
        row["floor_ms_per_token"] = 1e3 * row["weight_bytes"] / bw["bytes_per_s"]
        row["codemill"] = measure_engine(engine, prompts, args.new_tokens, args.repeats)
        row["codemill"]["graph_step_ms"] = graph_step_ms(engine)
        ms = row["codemill"]["ms_per_token"]
        row["codemill"]["bandwidth_fraction"] = row["floor_ms_per_token"] / ms
        if row["codemill"]["graph_step_ms"]:
            row["codemill"]["graph_bandwidth_fraction"] = row["floor_ms_per_token"] / row["codemill"]["graph_step_ms"]
        save()
        if args.compile_engine:
            try:
                t = now()
                compiled = make_engine(cfg, state, device, dtype, int8=False, slots=8, compile=True)
                row["codemill_compiled"] = {"build_and_compile_s": now() - t}
                row["codemill_compiled"].update(measure_engine(compiled, prompts, args.new_tokens, args.repeats))
                row["codemill_compiled"]["graph_step_ms"] = graph_step_ms(compiled)
                row["codemill_compiled"]["bandwidth_fraction"] = \
                    row["floor_ms_per_token"] / row["codemill_compiled"]["ms_per_token"]
                same = greedy_agreement(engine, compiled, prompts[:2], 32)
                row["codemill_compiled"]["greedy_vs_eager"] = same
                ms = min(ms, row["codemill_compiled"]["ms_per_token"])
                del compiled
            except Exception:
                row["codemill_compiled"] = {"error": traceback.format_exc()[-1500:]}
            save()
        row["best_ms_per_token"] = ms
        row["best_bandwidth_fraction"] = row["floor_ms_per_token"] / ms
        # INT8 weight-only beside bf16, same weights.
        if device.type == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
        int8 = make_engine(cfg, state, device, dtype, int8=True, slots=8)
        q = {"weight_bytes": int8.decoder.weight_bytes(), "bf16_weight_bytes": row["weight_bytes"]}
        if device.type == "cuda":
            q["allocated_bytes"] = torch.cuda.memory_allocated() - before  # its weights + its KV cache
            q["kv_cache_bytes"] = int8.decoder.cache_bytes()
        q.update(measure_engine(int8, prompts, args.new_tokens, args.repeats))
        q["bf16_ms_per_token"] = row["codemill"]["ms_per_token"]
        q["greedy"] = greedy_agreement(engine, int8, prompts[:args.agreement_prompts], args.agreement_tokens)
        q["min_logit_cosine"] = logit_cosine(engine, int8, prompts[:args.agreement_prompts], device)
        row["int8"] = q
        del int8, engine
        save()
        # Hugging Face's generate on the same shape, after codemill's engines are gone (same free memory).
        del model, state
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        row["hf"] = hf_modes(cfg, device, dtype, prompts[0], args.new_tokens, args.repeats,
                             compile_mode=not args.no_hf_compile)
        timed = [m["ms_per_token"] for m in row["hf"].values() if "ms_per_token" in m]
        if timed:
            row["hf_baseline_ms_per_token"] = min(timed)
            row["speedup_vs_hf"] = min(timed) / ms
        save()


# ----------------------------------------------------------------------------- the HTTP part
async def sse_request(session, url: str, body: dict) -> dict:
    t0 = now()
    first, tokens, status = None, 0, None
    async with session.post(url, json=body) as resp:
        status = resp.status
        if status != 200:
            await resp.read()
            return {"status": status}
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and first is None:  # the first token's chunk (its text may be empty)
                first = now()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = now()
    return {"status": status, "ttft": (first or end) - t0, "tokens": tokens,
            "tpot": (end - first) / (tokens - 1) if first and tokens > 1 else None}


async def load_level(url: str, prompts: list[str], concurrency: int, n_requests: int, new_tokens: int) -> dict:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=concurrency + 4)) as session:
        async def one(i: int) -> dict:
            async with sem:
                body = {"model": "bench", "prompt": prompts[i % len(prompts)], "max_tokens": new_tokens,
                        "temperature": 0, "stream": True, "ignore_eos": True,
                        "stream_options": {"include_usage": True}}
                return await sse_request(session, url, body)

        t = now()
        results = await asyncio.gather(*(one(i) for i in range(n_requests)))
        wall = now() - t
    ok = [r for r in results if r["status"] == 200]
    ttft = [r["ttft"] * 1e3 for r in ok]
    tpot = [r["tpot"] * 1e3 for r in ok if r["tpot"] is not None]
    return {"concurrency": concurrency, "requests": n_requests, "errors": len(results) - len(ok),
            "output_tokens": sum(r["tokens"] for r in ok), "wall_s": wall,
            "tokens_per_s": sum(r["tokens"] for r in ok) / wall,
            "ttft_ms_p50": pct(ttft, 50), "ttft_ms_p99": pct(ttft, 99),
            "tpot_ms_p50": pct(tpot, 50), "tpot_ms_p99": pct(tpot, 99)}


async def engine_alone_ttft(engine, prompt_ids: list[int], new_tokens: int, repeats: int) -> list[float]:
    """TTFT of the same engine class in this process through its asyncio face (no HTTP, no Serve)."""
    from codemill.serve.async_engine import AsyncEngine

    aeng = AsyncEngine(engine)
    out = []
    try:
        for i in range(repeats + 1):
            t = now()
            first = None
            async for o in aeng.generate(f"alone-{i}", prompt_ids, GenerationParams(
                    max_tokens=new_tokens, temperature=0, ignore_eos=True)):
                if first is None and any(d.text or d.token_ids for d in o.deltas):
                    first = now() - t
            if i:  # the first is a warm-up
                out.append(first * 1e3)
    finally:
        aeng.stop()
    return out


def http_part(args, device, dtype, tokenizer, results, save) -> None:
    import ray
    from ray import serve

    from codemill.config import build_config
    from codemill.serve.app import application
    from codemill.serve.config import ServeConfig
    from codemill.serve.loader import load_engine
    from codemill.serve.stage import wait_healthy
    from codemill.serve.testing import write_random_export

    preset = args.http_preset
    out: dict = {"preset": preset, "dtype": args.dtype, "new_tokens": args.http_new_tokens, "levels": [],
                 "compiled_decode": args.http_compile}
    results["http"] = out
    export = tempfile.mkdtemp(prefix="cm-bench-export-")
    t = now()
    model = build_model(preset, device, torch.float32 if args.smoke else dtype)
    write_random_export(export, PRESETS[preset], model=model, dtype=dtype)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    out["export_s"] = now() - t
    ids = humaneval_prompts(tokenizer, args.prompts, 512)
    texts = [tokenizer.decode(p) for p in ids]
    ray.init(num_cpus=os.cpu_count(), num_gpus=1 if device.type == "cuda" else 0, include_dashboard=False,
             log_to_driver=True)
    port = args.port
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = build_config(ServeConfig, {
        "models": [{"name": "bench", "input": export, "dtype": args.dtype, "device": device.type,
                    "compile": args.http_compile,
                    "gpus_per_replica": 1 if device.type == "cuda" else 0, "cpus_per_replica": 1,
                    "replicas": 1, "max_ongoing_requests": 4096}],
        "max_batch_size": max(args.concurrency), "max_queue": 8192, "max_n": 1, "max_num_beams": 1})
    t = now()
    serve.run(application(cfg), name="bench", route_prefix="/", blocking=False)
    wait_healthy(f"http://127.0.0.1:{port}", 900)
    out["deploy_s"] = now() - t
    url = f"http://127.0.0.1:{port}/v1/completions"
    asyncio.run(load_level(url, texts, 4, 8, 16))  # warm-up: connections, replica, graphs
    save()
    # Serve's added TTFT at concurrency 1: the same prompt through HTTP, then through the engine alone.
    c1 = asyncio.run(load_level(url, [texts[0]], 1, args.ttft_repeats, args.http_new_tokens))
    loaded = load_engine(export, args.dtype, device.type, max_batch_size=8, cuda_graphs=True,
                         compile=args.http_compile)
    alone = asyncio.run(engine_alone_ttft(loaded.engine, tokenizer.encode(texts[0]).ids, args.http_new_tokens,
                                          args.ttft_repeats))
    del loaded
    gc.collect()
    out["ttft_concurrency1"] = {"http_ms_p50": c1["ttft_ms_p50"], "engine_alone_ms_p50": statistics.median(alone),
                                "added_ms": c1["ttft_ms_p50"] - statistics.median(alone),
                                "prompt_tokens": len(ids[0])}
    save()
    for c in args.concurrency:
        level = asyncio.run(load_level(url, texts, c, max(2 * c, 8), args.http_new_tokens))
        out["levels"].append(level)
        print(json.dumps(level), flush=True)
        save()
    by_c = {lv["concurrency"]: lv["tokens_per_s"] for lv in out["levels"]}
    if 1 in by_c and 64 in by_c:
        out["scaling_64_over_1"] = by_c[64] / by_c[1]
    save()
    serve.shutdown()
    ray.shutdown()


# ----------------------------------------------------------------------------- where the decode step's time goes
def profile_part(args, device, dtype, tokenizer, results, save) -> None:
    """Kernel time of the decode step by kernel (profiler, eager launches) and the graphed step per bucket."""
    from torch.profiler import ProfilerActivity, profile

    preset = args.presets[-1]
    cfg = PRESETS[preset]
    state = build_model(preset, device, dtype).state_dict()
    out = {"preset": preset}
    for compiled in (False, True):
        engine = make_engine(cfg, state, device, dtype, int8=False, slots=8, compile=compiled)
        dec, runner = engine.decoder, engine.runner
        tokens = torch.zeros(1, dtype=torch.long, device=device)
        positions = torch.full((1,), 300, dtype=torch.long, device=device)
        for _ in range(3):
            dec.decode(tokens, positions, 512)
        sync(device)
        cuda = device.type == "cuda"
        with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                dec.decode(tokens, positions, 512)
            sync(device)
        table = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=30,
                                          max_name_column_width=70)
        print(table, flush=True)
        steps = {}
        for (b, length), (graph, _) in sorted(runner.graphs.items()) if cuda else []:
            steps[f"b{b}_L{length}"] = replay_ms(graph, 50, warmup=1)
        out["compiled" if compiled else "eager"] = {"kernels": table, "graph_step_ms": steps}
        print(json.dumps(steps), flush=True)
        del engine, dec, runner
        save()
    results["profile"] = out


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["350m", "1.3b"])
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--parts", nargs="+", default=["engine", "http"], choices=["engine", "http", "profile"])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--agreement-prompts", type=int, default=10)
    p.add_argument("--agreement-tokens", type=int, default=64)
    p.add_argument("--copy-gib", type=float, default=4.0)
    p.add_argument("--no-hf-compile", action="store_true")
    p.add_argument("--compile-engine", action="store_true", help="also measure the torch.compile'd decode step")
    p.add_argument("--http-compile", action="store_true", help="serve with the compiled decode step")
    p.add_argument("--http-preset", default="1.3b")
    p.add_argument("--http-new-tokens", type=int, default=256)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32, 64, 128])
    p.add_argument("--ttft-repeats", type=int, default=10)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "serve_latency.json"))
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the script, measures nothing")
    args = p.parse_args()
    if args.smoke:
        args.presets, args.http_preset, args.dtype, args.new_tokens, args.http_new_tokens = \
            ["tiny"], "tiny", "fp32", 12, 12
        args.concurrency, args.copy_gib, args.prompts, args.repeats, args.ttft_repeats = [1, 4], 0.05, 5, 1, 2
        args.agreement_prompts, args.agreement_tokens, args.no_hf_compile = 2, 8, True
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = DTYPES[args.dtype]
    results = {"command": "python " + " ".join(sys.argv), "machine": machine(device),
               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": args.smoke,
               "references": {"hf_generate_1.3b_ms": HF_REFERENCE_1P3B_MS,
                              "gpt_fast_style_1.3b_ms": GPT_FAST_REFERENCE_1P3B_MS}}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_path.write_text(json.dumps(results, indent=2) + "\n")

    tokenizer = codegeex_tokenizer()
    for part, fn in (("engine", engine_part), ("http", http_part), ("profile", profile_part)):
        if part not in args.parts:
            continue
        try:
            fn(args, device, dtype, tokenizer, results, save)
        except Exception as exc:
            results.setdefault("errors", {})[part] = traceback.format_exc()[-2000:]
            print(f"{part} failed: {exc}", file=sys.stderr)
        save()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
