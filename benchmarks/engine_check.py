"""Does codemill's serve engine compute the model on this device? Every token it generates, its log-probability as
the engine computed it against the exported model's own forward pass over the same text.

Greedy rows and sampled rows of staggered lengths decode together, so the batch starts above the largest CUDA-graph
size and shrinks through the captured ones: paged attention (Triton on a GPU), the graphs, the fused kernels and
the sampler all run as they do in serving and generation. Teacher forcing makes the comparison exact: no near-tie
can split the two texts, as comparing greedy text would. bf16 kernels differ by hundredths of a nat; a fault by
whole nats at many positions. The sampled tokens are also checked against the plain model's nucleus at their
temperature: a sampler that draws what top-p excludes passes the log-probability comparison (it reports the
log-probability of the token it drew) but not this. On a GPU the run also counts the host-device
synchronisations PyTorch reports (`synchronising_calls`, beside `steps`): by design one a step.

    # a GPU: random-weight exports of two presets, their init widened so the next-token distributions are peaked
    # like a trained model's (a fault changes the argmax, not only the noise); results as JSON
    python benchmarks/engine_check.py --presets 125m,1.3b --out engine_check.json
    # CPU smoke (tiny preset, fp32; Triton runs in its interpreter where TRITON_INTERPRET=1):
    python benchmarks/engine_check.py --smoke --out /tmp/engine_check.json

benchmarks/proof_run.py runs the same check on the model it trained before generating its samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CHECK_TOP_P = 0.95           # the sampled rows' nucleus, SPEC §8's
CHECK_TOLERANCE_NATS = 0.5
# Tokens further off than the tolerance, and greedy picks the plain model puts further than it below its own
# argmax, at most: bf16 rounding splits near-ties (on an H100, 125m: 0 and 1 of 2,048 greedy picks).
CHECK_MAX_SHARE_OFF = 0.01
# A sampled token is outside its row's nucleus when the tokens the plain model finds more likely (at the row's
# temperature) hold at least this much mass, where the nucleus ends at CHECK_TOP_P: no bf16 rounding moves a token
# that far, a sampler fault does (one drew a uniformly random token once in 320). Allowed: this share of them.
CHECK_NUCLEUS_MARGIN = 0.99
CHECK_MAX_SHARE_OUTSIDE = 0.001
CHECK_TEMPERATURE = 0.8
# The random exports' weight scale: CodeGeeX's own init (0.02) gives near-flat next-token distributions, where
# a wrong attention output moves every log-probability a little and no argmax; a wider one peaks them.
RANDOM_INIT_STD = 0.06


def run_counting_syncs(engine, device: str) -> tuple[int, int | None]:
    """Runs the engine to the end -> (steps, host-device synchronisations PyTorch reported). By design a step waits
    once, for the step before it (`Launched.read`); more than about one a step means the host waits for the device
    where it should run ahead of it. None on a CPU (nothing to wait for)."""
    import warnings

    import torch

    steps = 0
    if device != "cuda":
        while engine.has_work():
            engine.step()
            steps += 1
        return steps, None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            while engine.has_work():
                engine.step()
                steps += 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return steps, sum("synchronizing CUDA operation" in str(w.message) for w in caught)


def engine_check(gen, export: str, device: str, problems: dict, prompts: int, greedy_tokens: int,
                 sampled_n: int) -> dict:
    """The engine's own log-probability of every token it generated against the plain model's, teacher-forced on
    the same text in the same dtype on the same device. Per prompt (the first HumanEval-X Python prompts): one
    greedy row of `greedy_tokens` and `sampled_n` rows at t = 0.8 of staggered lengths. `ok` says whether the
    engine computes the model, and whether its sampled tokens lie in the model's nucleus."""
    import torch

    from codemill.eval.samples import build_jobs
    from codemill.serve.sequence import GenerationParams
    from codemill.train.export import load_model

    started = time.time()
    texts = [j.prompt for j in build_jobs(problems, ["Python"], list(range(prompts)), "generation", [])]
    rows: dict[tuple[str, int], dict] = {}
    errors: list[str] = []

    def emit_for(rid: str):
        def emit(out):
            if out.error:
                errors.append(f"{rid}: {out.error}")
            for d in out.deltas:
                row = rows.setdefault((rid, d.index), {"tokens": [], "logprobs": []})
                row["tokens"] += d.token_ids
                row["logprobs"] += [lp.logprob for lp in d.logprobs]
        return emit

    encoded = {}
    for i, prompt in enumerate(texts):
        ids = gen.tokenizer.encode(prompt, add_special_tokens=False).ids
        for kind, params in (("greedy", GenerationParams(max_tokens=greedy_tokens, temperature=0.0, logprobs=1,
                                                         ignore_eos=True)),
                             ("sampled", GenerationParams(max_tokens=max(4, greedy_tokens * (i + 1) // (prompts + 1)),
                                                          temperature=CHECK_TEMPERATURE, top_p=CHECK_TOP_P, n=sampled_n, seed=i,
                                                          logprobs=1, ignore_eos=True))):
            rid = f"check-{kind}-{i}"
            encoded[rid] = ids
            gen.engine.add_request(rid, ids, params, emit_for(rid))
    steps, syncs = run_counting_syncs(gen.engine, device)
    if errors:
        raise RuntimeError(f"the engine failed {len(errors)} check request(s): {errors[0]}")
    engine_s = time.time() - started
    model = load_model(export, device=device, dtype=gen.engine.decoder.dtype)
    diffs, greedy_off, greedy_seen, outside, sampled_seen = [], 0, 0, 0, 0
    valid = gen.engine.valid_vocab
    with torch.no_grad():
        for (rid, _), row in rows.items():
            ids = encoded[rid]
            full = torch.tensor([ids + row["tokens"]], device=device)
            logprobs = torch.log_softmax(model(full)[0, len(ids) - 1:-1].float(), dim=-1)
            target = torch.tensor(row["tokens"], device=device)
            plain = logprobs.gather(1, target[:, None])[:, 0]
            diffs += (plain - torch.tensor(row["logprobs"], device=device)).abs().tolist()
            if rid.startswith("check-greedy"):  # the engine's pick is the model's argmax, up to near-ties
                greedy_off += int(((logprobs.max(dim=-1).values - plain) > CHECK_TOLERANCE_NATS).sum())
                greedy_seen += len(row["tokens"])
            else:  # the engine's pick lies in the nucleus of the model's distribution at the row's temperature
                probs = torch.softmax(logprobs[:, :valid] / CHECK_TEMPERATURE, dim=-1)
                picked = probs.gather(1, target.clamp(max=valid - 1)[:, None])
                before = (probs * (probs > picked)).sum(dim=-1)
                outside += int(((before >= CHECK_NUCLEUS_MARGIN) | (target >= valid)).sum())  # or no token at all
                sampled_seen += len(row["tokens"])
    del model
    diffs.sort()
    off = sum(d > CHECK_TOLERANCE_NATS for d in diffs)
    share = off / max(len(diffs), 1)
    greedy_share = greedy_off / max(greedy_seen, 1)
    outside_share = outside / max(sampled_seen, 1)
    return {"ok": share <= CHECK_MAX_SHARE_OFF and greedy_share <= CHECK_MAX_SHARE_OFF
            and outside_share <= CHECK_MAX_SHARE_OUTSIDE, "sequences": len(rows),
            "tokens": len(diffs), "greedy_tokens": greedy_seen, "sampled_tokens": sampled_seen, "steps": steps,
            "synchronising_calls": syncs,
            "sampled_outside_nucleus": outside,
            "dtype": str(gen.engine.decoder.dtype), "attention": gen.engine.decoder.attention,
            "tolerance_nats": CHECK_TOLERANCE_NATS, "tokens_off": off, "share_off": round(share, 5),
            "greedy_picks_off": greedy_off, "max_abs_diff": round(diffs[-1], 4) if diffs else None,
            "p99_abs_diff": round(diffs[int(0.99 * (len(diffs) - 1))], 4) if diffs else None,
            "mean_abs_diff": round(sum(diffs) / max(len(diffs), 1), 5),
            "engine_s": round(engine_s, 1), "seconds": round(time.time() - started, 1)}


def check_random_export(preset: str, device: str, attention: str, cuda_graphs: bool, prompts: int, tokens: int,
                        n: int, dtype: str | None = None) -> dict:
    import torch

    from codemill.eval.generate import EngineGenerator
    from codemill.humaneval import load_problems
    from codemill.serve.testing import write_random_export
    from codemill.train.model import PRESETS

    with tempfile.TemporaryDirectory() as tmp:
        export = str(Path(tmp) / "export")
        dtype = dtype or ("bf16" if device == "cuda" else "fp32")
        write_random_export(export, PRESETS[preset], init_std=RANDOM_INIT_STD,
                            dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
        gen = EngineGenerator(export, device=device, dtype=dtype, max_batch_size=max(16, prompts * (n + 1)),
                              attention=attention, cuda_graphs=cuda_graphs)
        result = engine_check(gen, export, device, load_problems(["Python"]), prompts, tokens, n)
        del gen
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"preset": preset, "device": device, "cuda_graphs": cuda_graphs, **result}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results as JSON")
    p.add_argument("--presets", default="125m,1.3b", help="comma-separated presets, each a random-weight export")
    p.add_argument("--attention", default="auto", choices=["auto", "triton", "sdpa"])
    p.add_argument("--prompts", type=int, default=8, help="HumanEval-X Python prompts")
    p.add_argument("--tokens", type=int, default=256, help="tokens of each greedy row (sampled rows: fewer)")
    p.add_argument("--n", type=int, default=12, help="sampled rows per prompt")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="the engine's and the plain model's (default: bf16 on a "
                   "GPU, fp32 on a CPU); fp32 separates a kernel fault from bf16 rounding")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda where there is one")
    p.add_argument("--smoke", action="store_true", help="tiny preset on the CPU, one prompt, a few tokens")
    a = p.parse_args()
    import torch

    from codemill.logs import setup_logging

    setup_logging()
    cuda = torch.cuda.is_available() and not a.smoke and a.device != "cpu"
    device = "cuda" if cuda else "cpu"
    if a.smoke:
        a.presets, a.prompts, a.tokens, a.n = "tiny", 1, 12, 2
    results = {"machine": {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__},
               "smoke": a.smoke, "checks": []}
    for preset in a.presets.split(","):
        for graphs in ([True, False] if cuda else [False]):
            r = check_random_export(preset, device, a.attention, graphs, a.prompts, a.tokens, a.n, a.dtype)
            print(json.dumps(r), flush=True)
            results["checks"].append(r)
            Path(a.out).write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
