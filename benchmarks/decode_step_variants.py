"""Which formulation of the batch-1 decode step gets closest to the HBM floor on this GPU: the graphed step
time of each variant at a preset's shape (random weights), torch only (no Ray). Prints one JSON line per
variant (and writes them all to --out). Used to choose the serve decoder's GPU path; see benchmarks/RESULTS.md.

    python benchmarks/decode_step_variants.py --preset 1.3b --batch 1 --length 512
    python benchmarks/decode_step_variants.py --smoke --out /tmp/variants.json   # tiny, CPU: checks the script

`--smoke` runs the serve decoder's own variants (the paged decoder with SDPA, with the Triton attention, with
fused.py's kernels; the kernels in Triton's interpreter) and the bare matmuls on the tiny preset on the CPU,
timed by the wall clock: it proves the script still drives the decoder, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cuda_timing import capture, replay_ms

from codemill.train.model import FAST_GELU_SLOPE, PRESETS, CodeGeeX

# The variants that are the serve decoder itself (codemill/serve/decoder.py), and those compiled here.
DECODER_VARIANTS = ("current", "fused", "triton", "sdpa")
SMOKE_VARIANTS = ["matmuls", "sdpa", "triton", "fused"]


def graph_ms(fn, reps: int = 100) -> float:
    return replay_ms(capture(fn), reps)


def wall_ms(fn, reps: int = 3) -> float:
    """Milliseconds per call by the wall clock (a CPU has no graphs to replay)."""
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1e3 * (time.perf_counter() - start) / reps


def bandwidth() -> float:
    """Bytes read + written per second by a 4 GiB device-to-device copy, as serve_latency.py measures it
    (launched eagerly: captured in a graph, the copy becomes a copy-engine node, about 35% slower on an H200)."""
    src = torch.empty(2 << 30, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(20):
        dst.copy_(src)
    b.record()
    torch.cuda.synchronize()
    return 2 * src.numel() * src.element_size() / (a.elapsed_time(b) / 20 / 1e3)


class Weights:
    """Plain tensors: per layer ln1 w/b, qkv w/b, dense w/b, ln2 w/b, up w/b, down w/b."""

    def __init__(self, state, cfg, dtype, device: str = "cuda"):
        d = device

        def t(k, dt=dtype):
            return state[k].to(d, dt).contiguous()

        self.cfg = cfg
        self.wte, self.wpe, self.wqe = t("word_embedding.weight"), t("position_embedding.weight"), t(
            "query_embedding.weight")
        self.layers = []
        for i in range(cfg.num_layers - 1):
            p = f"blocks.{i}"
            self.layers.append([t(f"{p}.input_norm.weight", torch.float32), t(f"{p}.input_norm.bias", torch.float32),
                                t(f"{p}.attention.qkv.weight"), t(f"{p}.attention.qkv.bias"),
                                t(f"{p}.attention.dense.weight"), t(f"{p}.attention.dense.bias"),
                                t(f"{p}.post_attention_norm.weight", torch.float32),
                                t(f"{p}.post_attention_norm.bias", torch.float32),
                                t(f"{p}.mlp.up.weight"), t(f"{p}.mlp.up.bias"),
                                t(f"{p}.mlp.down.weight"), t(f"{p}.mlp.down.bias")])
        p = "top_query"
        self.fn_w, self.fn_b = t("final_norm.weight", torch.float32), t("final_norm.bias", torch.float32)
        self.top = [t(f"{p}.input_norm.weight", torch.float32), t(f"{p}.input_norm.bias", torch.float32),
                    t(f"{p}.attention.query.weight"), t(f"{p}.attention.query.bias"),
                    t(f"{p}.attention.key_value.weight"), t(f"{p}.attention.key_value.bias"),
                    t(f"{p}.attention.dense.weight"), t(f"{p}.attention.dense.bias"),
                    t(f"{p}.post_attention_norm.weight", torch.float32),
                    t(f"{p}.post_attention_norm.bias", torch.float32),
                    t(f"{p}.mlp.up.weight"), t(f"{p}.mlp.up.bias"), t(f"{p}.mlp.down.weight"), t(f"{p}.mlp.down.bias")]


def ln(x, w, b, eps):
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, eps).to(x.dtype)


def attend(q, kc, vc, rows, positions, knew, vnew, kv_length, manual: bool):
    """q/knew/vnew [B, H, D]; kc/vc [slots, H, L, D]."""
    kc[rows, :, positions] = knew
    vc[rows, :, positions] = vnew
    bsz = q.shape[0]
    k, v = kc[:bsz, :, :kv_length], vc[:bsz, :, :kv_length]
    allowed = torch.arange(kv_length, device=q.device)[None, :] <= positions[:, None]  # [B, L]
    if manual:
        s = torch.einsum("bhd,bhld->bhl", q.float(), k.float()) / math.sqrt(q.shape[-1])
        s = s.masked_fill(~allowed[:, None, :], float("-inf"))
        p = torch.softmax(s, dim=-1)
        return torch.einsum("bhl,bhld->bhd", p, v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=allowed[:, None, None, :])[:, :, 0]


def layer_step(x, w, kc, vc, rows, positions, kv_length: int, eps: float, heads: int, manual: bool):
    ln1w, ln1b, qkvw, qkvb, dw, db, ln2w, ln2b, uw, ub, downw, downb = w
    bsz = x.shape[0]
    qkv = F.linear(ln(x, ln1w, ln1b, eps), qkvw, qkvb).view(bsz, 3, heads, -1)
    a = attend(qkv[:, 0], kc, vc, rows, positions, qkv[:, 1], qkv[:, 2], kv_length, manual)
    x = x + F.linear(a.reshape(bsz, -1), dw, db)
    u = F.linear(ln(x, ln2w, ln2b, eps), uw, ub)
    return x + F.linear(u * torch.sigmoid(FAST_GELU_SLOPE * u), downw, downb)


def top_step(x, w, kc, vc, rows, positions, kv_length, eps, heads, manual, wqe):
    ln1w, ln1b, qw, qb, kvw, kvb, dw, db, ln2w, ln2b, uw, ub, downw, downb = w
    bsz = x.shape[0]
    kv = F.linear(ln(x, ln1w, ln1b, eps), kvw, kvb).view(bsz, 2, heads, -1)
    q = F.linear(wqe[positions], qw, qb).view(bsz, heads, -1)
    a = attend(q, kc, vc, rows, positions, kv[:, 0], kv[:, 1], kv_length, manual)
    x = x + F.linear(a.reshape(bsz, -1), dw, db)
    u = F.linear(ln(x, ln2w, ln2b, eps), uw, ub)
    return x + F.linear(u * torch.sigmoid(FAST_GELU_SLOPE * u), downw, downb)


def full_step(W: Weights, kcs, vcs, tokens, positions, kv_length: int, manual: bool, layer_fn=layer_step,
              top_fn=top_step):
    cfg = W.cfg
    eps, heads = cfg.layernorm_eps, cfg.num_heads
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    x = W.wte[tokens] + W.wpe[positions]
    for i, w in enumerate(W.layers):
        x = layer_fn(x, w, kcs[i], vcs[i], rows, positions, kv_length, eps, heads, manual)
    x = ln(x, W.fn_w, W.fn_b, eps)
    x = top_fn(x, W.top, kcs[-1], vcs[-1], rows, positions, kv_length, eps, heads, manual, W.wqe)
    return F.linear(x, W.wte)


def gemv_table(cfg, dtype, bw: float) -> None:
    """Each projection shape alone, one row: 24 distinct weight copies in one graph (no L2 reuse), cuBLAS
    against fused.py's kernel."""
    from codemill.serve import fused
    from codemill.serve.quant import DenseLinear

    h, f = cfg.hidden_size, cfg.ffn_hidden_size
    for n, k in ((3 * h, h), (h, h), (f, h), (h, f), (cfg.vocab_size, h)):
        weights = [torch.randn(n, k, dtype=dtype, device="cuda") * 0.02 for _ in range(24)]
        bias = torch.zeros(n, dtype=dtype, device="cuda")
        x = torch.randn(1, k, dtype=dtype, device="cuda")
        row = {"N": n, "K": k, "floor_us": 1e6 * n * k * 2 / bw}
        def fused_linear(x, w, b):
            return fused.linear(x, DenseLinear(w, b))

        for name, linear in (("cublas", F.linear), ("fused", fused_linear)):
            def fn(linear=linear, weights=weights, x=x, bias=bias):
                for w in weights:
                    linear(x, w, bias)
            with torch.inference_mode():
                fn()
                row[name + "_us"] = round(1e3 * graph_ms(fn, 50) / len(weights), 2)
        print(json.dumps(row), flush=True)


def make_step(name: str, cfg, state, W: Weights, kcs, vcs, tokens, positions, length: int, slots: int, dtype):
    """The decode step of one variant, as a function of nothing (its inputs bound)."""
    manual = "manual" in name
    device = tokens.device
    if name == "matmuls":  # the projections alone, cuBLAS: what matrix products cost without anything else
        x = torch.randn(tokens.shape[0], cfg.hidden_size, dtype=dtype, device=device)

        def matmuls():
            for w in W.layers:
                F.linear(x, w[2], w[3])
                F.linear(x, w[4], w[5])
                F.linear(F.linear(x, w[8], w[9]), w[10], w[11])
            return F.linear(x, W.wte)
        return matmuls
    if name in DECODER_VARIANTS:  # codemill's paged decoder: compiled regions + Triton attention, fused.py's
        # single-row kernels (a batch of one; larger ones decode as `triton`), Triton attention alone, or the
        # plain SDPA-over-pages path
        from codemill.serve.decoder import Decoder, ForwardBatch

        dec = Decoder(cfg, state, device, dtype, compile=name == "current", fused=name == "fused",
                      attention="sdpa" if name == "sdpa" else "triton")
        bs, b = 16, tokens.shape[0]
        width = -(-cfg.max_seq_length // bs)
        dec.allocate_cache(b * width + 1, bs)
        tables = (torch.arange(b * width, device=device).view(b, width) + 1).to(torch.int32)
        slots_ = tables[torch.arange(b, device=device), positions // bs].long() * bs + positions % bs
        batch = ForwardBatch(tokens, positions, slots_, b, tables, (positions + 1).to(torch.int32), [])
        return lambda: dec.forward(batch)
    if name.startswith("layer"):  # one compiled graph per layer, shared by all layers
        lf = torch.compile(layer_step, fullgraph=True, dynamic=False)
        tf = torch.compile(top_step, fullgraph=True, dynamic=False)
        return lambda: full_step(W, kcs, vcs, tokens, positions, length, manual, lf, tf)
    step = torch.compile(full_step, fullgraph=True, dynamic=False,  # the whole step as one graph
                         mode="max-autotune-no-cudagraphs" if name.endswith("_mat") else None)
    return lambda: step(W, kcs, vcs, tokens, positions, length, manual)


def print_profile(fn) -> None:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--variants", nargs="+", default=["matmuls", "current", "fused", "sdpa", "layer", "full",
                                                       "full_cdt"],
                    help="also: triton (the decoder's Triton attention without fused kernels), layer_manual, "
                         "full_manual, full_manual_cdt (attention by hand), full_mat (max-autotune)")
    ap.add_argument("--gemv", action="store_true", help="first time each projection shape alone")
    ap.add_argument("--profile", action="store_true", help="also print each variant's kernels (eager launches)")
    ap.add_argument("--out", help="also write every result as one JSON file (rows, and whether it was a smoke run)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny preset, CPU, the decoder's own variants timed by the wall clock: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.preset, args.batch, args.length, args.variants = "tiny", [1, 2], 40, SMOKE_VARIANTS
        args.gemv = args.profile = False
        # The Triton kernels run on a CPU in Triton's interpreter, chosen before codemill.serve imports Triton.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    device = "cpu" if args.smoke else "cuda"
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    torch.manual_seed(0)
    dtype = torch.float32 if args.smoke else torch.bfloat16
    cfg = PRESETS[args.preset]
    if args.smoke:  # 128 positions: block tables of 8 pages, so the interpreted attention has few programs
        cfg = dataclasses.replace(cfg, max_seq_length=128)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the random model made in its serving dtype (no FP32 copy beside it)
    try:
        with torch.device(device):
            model = CodeGeeX(cfg)
    finally:
        torch.set_default_dtype(default)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    del model
    W = Weights(state, cfg, dtype, device)
    weight_bytes = sum(t.numel() * t.element_size() for lw in W.layers + [W.top] for t in lw) + \
        sum(t.numel() * t.element_size() for t in (W.wte, W.wpe, W.wqe))
    bw = bandwidth() if device == "cuda" else None
    floor_ms = 1e3 * weight_bytes / bw if bw else None
    emit({"bandwidth_TBps": bw / 1e12 if bw else None, "weight_MB": weight_bytes / 1e6, "floor_ms": floor_ms,
          "device": device})
    if args.gemv:
        gemv_table(cfg, dtype, bw)
    slots = max(args.batch)
    L = cfg.max_seq_length
    H, D = cfg.num_heads, cfg.head_dim
    kcs = [torch.zeros(slots, H, L, D, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
    vcs = [torch.zeros(slots, H, L, D, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
    for b in args.batch:
        tokens = torch.randint(0, 50000, (b,), device=device)
        positions = torch.full((b,), args.length - 100 if args.length > 100 else args.length - 1, device=device)
        ref = None
        for name in args.variants:
            compiled = name not in DECODER_VARIANTS and name != "matmuls" or name == "current"
            if compiled:
                torch._dynamo.reset()
                torch._inductor.config.coordinate_descent_tuning = name.endswith("_cdt")
            t0 = time.time()
            try:
                fn = make_step(name, cfg, state, W, kcs, vcs, tokens, positions, args.length, slots, dtype)
                with torch.inference_mode():
                    out = fn()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    warm = time.time() - t0
                    ms = graph_ms(fn) if device == "cuda" else wall_ms(fn, reps=1)
                if name != "matmuls":
                    ref = out.float() if ref is None else ref
                if args.profile and name != "matmuls":
                    print_profile(fn)
                emit({"variant": name, "batch": b, "length": args.length, "ms": round(ms, 4),
                      "bw_fraction": round(floor_ms / ms, 3) if b == 1 and floor_ms else None,
                      "compile_s": round(warm, 1),
                      "cos_vs_first": None if name == "matmuls" else
                      float(F.cosine_similarity(out.float(), ref, dim=-1).min())})
            except Exception as exc:  # report and go on to the next variant
                emit({"variant": name, "batch": b, "error": repr(exc)[:500]})
    failed = [r for r in rows if "error" in r]
    if args.out:
        Path(args.out).write_text(json.dumps({"smoke": args.smoke, "preset": args.preset, "device": device,
                                              "rows": rows}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
