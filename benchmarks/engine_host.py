"""The engine's host work per decode step: what scheduling, block tables, detokenisation, stop strings and emits cost
in Python for every row of every step, apart from the model's forward pass and the sampler.

On a GPU the engine launches step N+1 before it reads step N, so a step takes the longer of the device's work and
this host work; at hundreds of rows of a small model the host work is the longer one (the proof run's 125m generated
18.8k tokens/s at 559 rows on an H100, a few ms of GPU work a step). Measured here as the wall time of
the engine's step loop less the time inside the decoder's forward and the sampler, greedy, every row decoding
to its `--tokens` (EOS ignored).

    # this 2-core CPU machine, the tiny preset (a forward pass of a few ms, so the host work is measurable):
    .venv/bin/python benchmarks/engine_host.py --rows 64 512 --out benchmarks/results/engine_host.json
    # the proof run's generation: requests of 200 samples at t = 0.8, top-p 0.95
    .venv/bin/python benchmarks/engine_host.py --rows 600 --n 200 --temperature 0.8 --out F
    # smoke: seconds
    .venv/bin/python benchmarks/engine_host.py --smoke --out /tmp/engine_host.json
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(export: str, rows: int, tokens: int, device: str, n: int = 1, temperature: float = 0.0) -> dict:
    import codemill.serve.model_runner as model_runner
    from codemill.serve.engine import GenerationParams
    from codemill.serve.loader import load_engine

    loaded = load_engine(export, dtype="fp32" if device == "cpu" else "bf16", device=device, max_batch_size=rows,
                         max_queue=2 * rows)
    engine = loaded.engine
    inside = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if device == "cuda":
                    import torch
                    torch.cuda.synchronize()
                inside[0] += time.perf_counter() - t
        return wrapper

    decoder = engine.decoder
    decoder.forward = timed(decoder.forward)
    sample = model_runner.sample
    model_runner.sample = timed(sample)
    tokenizer = loaded.tokenizer
    try:
        # rows // n requests of n samples each (the proof run's generation: n = 200 at t = 0.8, top-p 0.95)
        prompts = [tokenizer.encode(f"def f{i}(x):\n    return", add_special_tokens=False).ids
                   for i in range(rows // n)]
        params = GenerationParams(max_tokens=tokens, temperature=temperature, top_p=0.95 if temperature else 1.0,
                                  n=n, seed=0, ignore_eos=True)

        def run(batch: list[list[int]]) -> tuple[float, int]:
            for i, ids in enumerate(batch):
                engine.add_request(f"r{i}", ids, params, lambda out: None)
            t = time.perf_counter()
            steps = 0
            while engine.has_work():
                engine.step()
                steps += 1
            return time.perf_counter() - t, steps

        run(prompts[:1])  # warm-up
        inside[0] = 0.0
        wall, steps = run(prompts)
    finally:
        model_runner.sample = sample
    host = wall - inside[0]
    return {"rows": rows, "n": n, "temperature": temperature, "tokens": tokens, "steps": steps, "wall_s": round(wall, 3),
            "forward_and_sampler_s": round(inside[0], 3), "host_s": round(host, 3),
            "host_ms_per_step": round(1e3 * host / steps, 2),
            "host_us_per_row_step": round(1e6 * host / (steps * rows), 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON results")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--rows", type=int, nargs="+", default=[64, 512])
    p.add_argument("--tokens", type=int, default=64, help="tokens each row decodes")
    p.add_argument("--n", type=int, default=1, help="samples per request (rows / n requests)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy; else sampled with top-p 0.95")
    p.add_argument("--repeats", type=int, default=3, help="runs per row count (the median is reported)")
    p.add_argument("--smoke", action="store_true", help="8 rows of 4 tokens once: checks the script")
    a = p.parse_args()
    if a.smoke:
        a.rows, a.tokens, a.repeats = [8], 4, 1
    if any(rows % a.n for rows in a.rows):
        p.error(f"--rows {a.rows}: each must be a multiple of --n {a.n} (rows / n requests of n samples)")

    import torch

    from codemill.serve.testing import write_random_export
    from codemill.train.model_config import PRESETS

    if a.device == "cpu":
        torch.set_num_threads(1)  # the host work runs on one thread; the forward's threads would only add noise
    results = {"smoke": a.smoke, "preset": a.preset, "device": a.device, "cpus": os.cpu_count(), "levels": []}
    with tempfile.TemporaryDirectory(prefix="cm-engine-host-") as export:
        write_random_export(export, PRESETS[a.preset])
        for rows in a.rows:
            runs = [measure(export, rows, a.tokens, a.device, a.n, a.temperature) for _ in range(a.repeats)]
            level = {**min(runs, key=lambda r: abs(r["host_s"] - statistics.median(x["host_s"] for x in runs))),
                     "host_ms_per_step_runs": [r["host_ms_per_step"] for r in runs]}
            print(json.dumps(level), flush=True)
            results["levels"].append(level)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
