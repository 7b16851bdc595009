"""Which tokens of a proof run's samples the sampler's fault drew (fixed in b93d6f8), counted exactly.

The fault: a column whose noise hash had its top 24 bits all ones got u = 1, noise -log(u) = 0, and, where that
column's probability was 0 (outside the nucleus), the exponential race's 0/0 = NaN won the argmax. A column with
that noise can win in no other way (at probability above 0 its race value is -inf), so a sampled token is a fault
exactly when its own noise hash, a function of (the sequence's seed, the step, the token), has those bits. The
seeds are the proof run's (benchmarks/proof_run.py: prompt p's base seed GENERATION_SEED + 7919 p plus its chunk
of the engine's slots; sample i of a request takes the engine's per-sequence seed), the steps are the token
positions, and the tokens are the completions encoded again (a generated text encodes back to the ids that
produced it but for rare tokenizer merges, which can only hide a fault, not invent one).

    # the third run's samples (both sets)
    .venv/bin/python benchmarks/sampler_fault_audit.py --run benchmarks/results/proof_run_3 --out F
    # smoke: the first 40 samples of one set
    .venv/bin/python benchmarks/sampler_fault_audit.py --smoke --out /tmp/audit.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

OLD_UNIT_BITS = 24  # the faulty mapping's bits; u = 1 when all of them are ones


def fault_mask(seeds, steps, tokens):
    """[T] seeds, steps and sampled tokens -> [T] bool: the token's noise was u = 1 under the faulty mapping."""
    from codemill.serve.sampling import column_bits, row_keys

    bits = column_bits(row_keys(seeds, steps), tokens)
    return (bits >> (32 - OLD_UNIT_BITS)) == (1 << OLD_UNIT_BITS) - 1


def audit(samples_file: Path, slots: int, limit: int | None = None) -> dict:
    import torch
    from proof_run import GENERATION_SEED

    from codemill.eval.generate import _chunks
    from codemill.serve.sampling import sequence_seed
    from codemill.tokenize.tokenizer import codegeex_tokenizer

    rows = [json.loads(line) for line in gzip.open(samples_file, "rt")]
    if limit:
        rows = rows[:limit]
    n = max(r["sample_id"] for r in rows) + 1
    chunk_starts = [sum(_chunks(n, slots)[:c]) for c in range(len(_chunks(n, slots)))]
    tokenizer = codegeex_tokenizer()
    seeds, steps, tokens, owner = [], [], [], []
    for index, r in enumerate(rows):
        problem = int(r["task_id"].split("/")[1])  # the proof run's prompts are problems 0..163 in order
        chunk = max(c for c, start in enumerate(chunk_starts) if start <= r["sample_id"])
        base = GENERATION_SEED + 7919 * problem + chunk
        seed = sequence_seed(base, r["sample_id"] - chunk_starts[chunk])
        ids = tokenizer.encode(r["completion"], add_special_tokens=False).ids
        seeds += [seed] * len(ids)
        steps += range(len(ids))
        tokens += ids
        owner += [index] * len(ids)
    mask = fault_mask(torch.tensor(seeds, dtype=torch.int64), torch.tensor(steps, dtype=torch.int64),
                      torch.tensor(tokens, dtype=torch.int64)) if tokens else torch.zeros(0, dtype=torch.bool)
    hit = sorted({owner[i] for i in torch.nonzero(mask)[:, 0].tolist()})
    by_task: dict[str, int] = {}
    for i in hit:
        by_task[rows[i]["task_id"]] = by_task.get(rows[i]["task_id"], 0) + 1
    examples = []
    for i in torch.nonzero(mask)[:, 0].tolist()[:5]:
        examples.append({"task_id": rows[owner[i]]["task_id"], "sample_id": rows[owner[i]]["sample_id"],
                         "step": steps[i], "token": tokenizer.decode([tokens[i]], skip_special_tokens=False)})
    return {"file": samples_file.name, "samples": len(rows), "n": n, "tokens": len(tokens),
            "fault_tokens": int(mask.sum()), "fault_tokens_per_1k": round(1e3 * int(mask.sum()) / max(len(tokens), 1), 3),
            "samples_with_a_fault": len(hit), "share_of_samples": round(len(hit) / max(len(rows), 1), 4),
            "examples": examples, "most_hit_tasks": sorted(by_task.items(), key=lambda kv: -kv[1])[:5]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(REPO / "benchmarks" / "results" / "proof_run_3"),
                   help="a proof run's results folder: samples_*.jsonl.gz and summary_device.json")
    p.add_argument("--out", required=True, help="results as JSON")
    p.add_argument("--smoke", action="store_true", help="the first 40 samples of one set")
    a = p.parse_args()
    run = Path(a.run)
    summary = json.loads((run / "summary_device.json").read_text())
    slots = summary["generation"]["engine_slots"]
    files = sorted(run.glob("samples_*.jsonl.gz"))
    if not files:
        p.error(f"{run}: no samples_*.jsonl.gz; give a proof run's results folder with --run")
    if a.smoke:
        files = files[:1]
    results = {"smoke": a.smoke, "run": str(run), "engine_slots": slots,
               "sets": [audit(f, slots, 40 if a.smoke else None) for f in files]}
    for s in results["sets"]:
        print(json.dumps({k: v for k, v in s.items() if k != "examples"}), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
