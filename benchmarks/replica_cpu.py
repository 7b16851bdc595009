"""What streaming the engine's outputs costs a Serve replica: CPU seconds of the replica's process per 1,000 output
tokens, and outputs per token, with the engine child's per-request coalescing off (every step's output sent) and
on (`stream_interval_ms`, ServeConfig's default 20 ms).

The replica's event loop pays per output, not per token: a wake-up, a queue hop, then (in `codemill serve`) a Serve
stream item and its JSON. At hundreds of streams that Python work, not the GPU, bounds tokens per second, so this
measures it where it starts: `EngineProcess.generate`, driven from this process as the replica drives it, with
`streams` requests decoding at once. CPU time (`time.process_time`, this process's threads) does not depend on what
else the machine runs; the wall time and tokens/s here do.

    # on this 2-core CPU machine, the tiny preset (the engine child's own CPU is not counted):
    .venv/bin/python benchmarks/replica_cpu.py --out benchmarks/results/replica_cpu.json
    # smoke: seconds
    .venv/bin/python benchmarks/replica_cpu.py --smoke --out /tmp/replica_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codemill.serve.config import DEFAULT_STREAM_INTERVAL_MS


async def drive(engine, streams: int, tokens: int, prompt: list[int]) -> dict:
    from codemill.serve.engine import GenerationParams

    counts = {"outputs": 0, "tokens": 0}

    async def one(i: int) -> None:
        params = GenerationParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        async for out in engine.generate(f"r{i}", prompt, params):
            counts["outputs"] += 1
            counts["tokens"] += sum(len(d.token_ids) for d in out.deltas)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(streams)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {**counts, "wall_s": round(wall, 3), "replica_cpu_s": round(cpu, 3),
            "replica_cpu_s_per_1k_tokens": round(1e3 * cpu / max(counts["tokens"], 1), 4),
            "outputs_per_token": round(counts["outputs"] / max(counts["tokens"], 1), 4),
            "tokens_per_s": round(counts["tokens"] / wall, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON results")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--streams", type=int, default=256)
    p.add_argument("--tokens", type=int, default=128, help="output tokens per request")
    p.add_argument("--intervals-ms", type=float, nargs="+", default=[0.0, DEFAULT_STREAM_INTERVAL_MS])
    p.add_argument("--smoke", action="store_true", help="8 streams of 8 tokens: checks the script, measures nothing")
    a = p.parse_args()
    if a.smoke:
        a.streams, a.tokens = 8, 8
    with tempfile.TemporaryDirectory(prefix="cm-replica-cpu-") as export:
        results = run_all(a, export)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def run_all(a, export: str) -> dict:
    from codemill.serve.engine_process import EngineProcess, EngineSpec
    from codemill.serve.testing import write_random_export
    from codemill.tokenize.tokenizer import codegeex_tokenizer
    from codemill.train.model_config import PRESETS

    write_random_export(export, PRESETS[a.preset])
    prompt = codegeex_tokenizer().encode("def fibonacci(n):\n    ", add_special_tokens=False).ids
    options = {"dtype": "fp32" if a.device == "cpu" else "bf16", "device": a.device, "max_batch_size": a.streams,
               "max_queue": 2 * a.streams}
    results = {"smoke": a.smoke, "preset": a.preset, "device": a.device, "streams": a.streams, "tokens": a.tokens,
               "runs": []}
    for interval in a.intervals_ms:
        engine = EngineProcess(EngineSpec(export, options, interval / 1e3), startup_timeout_s=600)
        try:
            asyncio.run(drive(engine, 2, 4, prompt))  # warm-up
            run = {"stream_interval_ms": interval, **asyncio.run(drive(engine, a.streams, a.tokens, prompt))}
        finally:
            engine.stop()
        print(json.dumps(run), flush=True)
        results["runs"].append(run)
    return results


if __name__ == "__main__":
    sys.exit(main())
