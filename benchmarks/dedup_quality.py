"""Quality of the dedup stage against brute force.

From real code files (the venv's site-packages), build a corpus with known duplicates: near copies of
an original at known token edit rates, and exact copies under other repositories and paths (with CRLF
line endings and trailing spaces, which the exact key normalises away). Compute the true Jaccard of
every pair by brute force on the same shingles, run the real stage (`python -m codemill.dedup`) on a
local Ray cluster, and report:
- recall: pairs with true Jaccard >= 0.8 that end up in one cluster (target >= 0.95);
- false merges: pairs with true Jaccard <= 0.5 that end up in one cluster (target <= 1%), over all such
  pairs and over the related ones (copies of the same original, the pairs that can actually be confused);
- exact copies removed (target 100%).

    bash scripts/in-netns.sh .venv/bin/python benchmarks/dedup_quality.py --originals 600
    bash scripts/in-netns.sh .venv/bin/python benchmarks/dedup_quality.py --smoke   # 30 originals, one stage run

`--code DIR` runs the stage from another checkout (e.g. a worktree of an older commit) on the same corpus:
the corpus comes from the venv's site-packages, so figures are comparable only within one machine state.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import csr_matrix

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_env import ray_head, results_path

from codemill import manifest as mf
from codemill import storage
from codemill.crawl.schema import make_doc_id
from codemill.dedup.config import JACCARD_THRESHOLD, SHINGLE_SIZE
from codemill.dedup.shingles import TOKEN_PATTERN, shingles
from codemill.filter.schema import KEPT_SCHEMA

SITE_PACKAGES = REPO_ROOT / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
EXTENSION_LANGUAGE = {".py": "Python", ".pyi": "Python", ".c": "C", ".h": "C", ".cpp": "C++", ".hpp": "C++",
                      ".cc": "C++", ".js": "JavaScript", ".ts": "TypeScript", ".java": "Java", ".go": "Go",
                      ".rs": "Rust", ".sh": "Shell"}
EDIT_RATES = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3)  # fraction of tokens edited
HIGH_JACCARD = 0.8
LOW_JACCARD = 0.5


def real_code_files(min_bytes: int, max_bytes: int, seed: int) -> list[tuple[str, str]]:
    """(relative path, text) of distinct real code files under site-packages, in a seeded order."""
    seen, files = set(), []
    for path in sorted(SITE_PACKAGES.rglob("*")):
        if path.suffix not in EXTENSION_LANGUAGE or not path.is_file():
            continue
        try:
            size = path.stat().st_size
            if not min_bytes <= size <= max_bytes:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        digest = hashlib.sha256(text.encode()).digest()
        if digest not in seen:
            seen.add(digest)
            files.append((str(path.relative_to(SITE_PACKAGES)), text))
    random.Random(seed).shuffle(files)
    return files


def edit_tokens(text: str, rate: float, rng: random.Random) -> str:
    """Edit about `rate` of the code tokens: replace, delete, or insert a token after it."""
    def edit(match: re.Match) -> str:
        token = match.group(0)
        if rng.random() >= rate:
            return token
        choice = rng.random()
        new = f"e{rng.getrandbits(32):x}"
        return new if choice < 0.5 else ("" if choice < 0.75 else f"{token} {new}")
    return TOKEN_PATTERN.sub(edit, text)


def exact_variant(text: str) -> str:
    """The same content as far as the exact key goes: CRLF line ends, trailing spaces."""
    return text.replace("\n", " \r\n")


def doc_row(repo: str, path: str, content: str, stars: int) -> dict:
    sha = hashlib.sha256(content.encode()).hexdigest()
    return {"doc_id": make_doc_id(repo, path, sha), "repo": repo, "path": path, "ext": Path(path).suffix,
            "content": content, "size_bytes": len(content.encode()), "sha256": sha, "encoding": "utf-8",
            "repo_stars": stars, "repo_language": EXTENSION_LANGUAGE[Path(path).suffix],
            "language": EXTENSION_LANGUAGE[Path(path).suffix]}


def write_filter_output(out: Path, tables: list[pa.Table]) -> None:
    """A finished filter stage's output: kept/ Parquet files and a complete manifest."""
    for i, table in enumerate(tables):
        storage.write_table(table, str(out / "kept" / f"part-{i:05d}.parquet"))
    mf.write_manifest(str(out), mf.Manifest(stage="filter", status=mf.STATUS_COMPLETE,
                                            config_hash="benchmark", config={}))


def run_stage(head, inp: Path, out: Path, overrides: list[str], code: Path) -> float:
    """`python -m codemill.dedup` (from the checkout `code`) against the head, as the DAG runs it; returns
    wall seconds."""
    cmd = [sys.executable, "-m", "codemill.dedup", "--input", str(inp), "--out", str(out), "--force"]
    for o in overrides:
        cmd += ["--set", o]
    started = time.time()
    subprocess.run(cmd, check=True, cwd=code, env={**os.environ, **head.env()})
    return time.time() - started


def make_corpus(n_originals: int, seed: int) -> tuple[list[dict], list[int], list[str]]:
    """Rows, the family (original index) of each row, and how each row was made."""
    rng = random.Random(seed)
    files = real_code_files(1_000, 30_000, seed)[:n_originals]
    rows, family, made = [], [], []
    for i, (path, text) in enumerate(files):
        rows.append(doc_row(f"orig/r{i}", path, text, stars=rng.randint(0, 1000)))
        family.append(i)
        made.append("original")
        for rate in rng.sample(EDIT_RATES, rng.randint(0, 3)):
            rows.append(doc_row(f"near/r{i}-{rate}", path, edit_tokens(text, rate, rng), stars=rng.randint(0, 1000)))
            family.append(i)
            made.append(f"near@{rate}")
        if rng.random() < 0.3:
            rows.append(doc_row(f"copy/r{i}", f"vendor/{path}", exact_variant(text), stars=rng.randint(0, 1000)))
            family.append(i)
            made.append("exact")
    return rows, family, made


def true_jaccard_pairs(texts: list[str], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, Jaccard) of every pair i < j that shares a shingle (all other pairs have Jaccard 0)."""
    vocab: dict[bytes, int] = {}
    indptr, indices = [0], []
    for text in texts:
        ids = sorted({vocab.setdefault(s, len(vocab)) for s in shingles(text, size)})
        indices.extend(ids)
        indptr.append(len(indices))
    x = csr_matrix((np.ones(len(indices), np.int32), np.array(indices), np.array(indptr)), shape=(len(texts), len(vocab)))
    inter = (x @ x.T).tocoo()
    upper = inter.row < inter.col
    i, j, common = inter.row[upper], inter.col[upper], inter.data[upper]
    sizes = np.diff(x.indptr)
    return i, j, common / (sizes[i] + sizes[j] - common)


def cluster_of(doc_ids: list[str], duplicates: pa.Table) -> np.ndarray:
    """A cluster label per document: the kept document's id for removed ones, its own id otherwise."""
    keeper = dict(zip(duplicates["doc_id"].to_pylist(), duplicates["kept_doc_id"].to_pylist()))
    labels = [keeper.get(d) or d for d in doc_ids]
    return np.unique(labels, return_inverse=True)[1]


def evaluate(rows, family, made, duplicates: pa.Table) -> dict:
    texts = [r["content"] for r in rows]
    n = len(rows)
    i, j, jac = true_jaccard_pairs(texts, SHINGLE_SIZE)
    cluster = cluster_of([r["doc_id"] for r in rows], duplicates)
    family = np.array(family)
    together = cluster[i] == cluster[j]
    high = jac >= HIGH_JACCARD
    # Pairs sharing no shingle (Jaccard 0) are low pairs too: count how many of them were merged.
    size_of = np.bincount(cluster)
    pairs_merged = int((size_of * (size_of - 1) // 2).sum())
    merged_sharing = int(together.sum())
    low_sharing = jac <= LOW_JACCARD
    low_total = n * (n - 1) // 2 - len(jac) + int(low_sharing.sum())
    low_merged = (pairs_merged - merged_sharing) + int((together & low_sharing).sum())
    # Related pairs: copies of the same original (the only pairs a dedup can plausibly confuse).
    related_pairs = [(a, b) for f in np.unique(family) for idx in [np.flatnonzero(family == f)]
                     for k, a in enumerate(idx) for b in idx[k + 1:]]
    jac_of = {(int(a), int(b)): float(v) for a, b, v in zip(i, j, jac)}
    related_low = [(a, b) for a, b in related_pairs if jac_of.get((a, b), 0.0) <= LOW_JACCARD]
    related_low_merged = sum(cluster[a] == cluster[b] for a, b in related_low)
    exact_rows = [k for k, m in enumerate(made) if m == "exact"]
    original_of = {f: k for k, (f, m) in enumerate(zip(family, made)) if m == "original"}
    kinds = dict(zip(duplicates["doc_id"].to_pylist(), duplicates["kind"].to_pylist()))
    # removed: the copy and its original share a cluster and one of the two was removed as `exact`
    exact_removed = sum(cluster[k] == cluster[o] and "exact" in (kinds.get(rows[k]["doc_id"]), kinds.get(rows[o]["doc_id"]))
                        for k, o in ((k, original_of[family[k]]) for k in exact_rows))
    by_rate = {}
    for k, m in enumerate(made):
        if m.startswith("near@"):
            o = original_of[family[k]]
            key = m.split("@")[1]
            entry = by_rate.setdefault(key, {"copies": 0, "merged_with_original": 0, "mean_true_jaccard": 0.0})
            entry["copies"] += 1
            entry["merged_with_original"] += int(cluster[k] == cluster[o])
            entry["mean_true_jaccard"] += jac_of.get((min(k, o), max(k, o)), 0.0)
    for entry in by_rate.values():
        entry["mean_true_jaccard"] = round(entry["mean_true_jaccard"] / entry["copies"], 3)
    high_pairs = int(high.sum())
    return {
        "documents": n, "pairs": n * (n - 1) // 2, "pairs_sharing_a_shingle": len(jac),
        "recall_at_0.8": {"pairs": high_pairs, "merged": int((together & high).sum()),
                          "recall": float((together & high).sum() / high_pairs) if high_pairs else None},
        "false_merge_at_0.5_all_pairs": {"pairs": low_total, "merged": low_merged, "rate": low_merged / low_total},
        "false_merge_at_0.5_related_pairs": {"pairs": len(related_low), "merged": int(related_low_merged),
                                             "rate": related_low_merged / len(related_low) if related_low else None},
        "exact_copies": {"made": len(exact_rows), "removed": int(exact_removed),
                         "rate": exact_removed / len(exact_rows) if exact_rows else None},
        "near_copies_by_edit_rate": dict(sorted(by_rate.items(), key=lambda kv: float(kv[0]))),
        "removed_by_kind": {k: int(v) for k, v in zip(*np.unique(duplicates["kind"].to_numpy(zero_copy_only=False),
                                                                  return_counts=True))},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--originals", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: benchmarks/results/dedup_quality.json")
    p.add_argument("--code", type=Path, default=REPO_ROOT, help="checkout whose codemill runs the stage")
    p.add_argument("--smoke", action="store_true", help="30 originals, the estimated verification only")
    args = p.parse_args()
    if args.smoke:
        args.originals = 30
    args.out = results_path(args.out, "dedup_quality.json", args.smoke)
    code = args.code.resolve()
    # The Ray head's processes (its workers included) and the stage import codemill from `code`.
    os.environ["PYTHONPATH"] = str(code)

    rows, family, made = make_corpus(args.originals, args.seed)
    print(f"corpus: {len(rows)} documents from {args.originals} originals", flush=True)
    results = {"command": " ".join(sys.argv), "code": str(code), "threshold": JACCARD_THRESHOLD,
               "shingle_size": SHINGLE_SIZE, "smoke": args.smoke}
    with tempfile.TemporaryDirectory(prefix="cm-dedup-quality-") as tmp, ray_head(num_cpus=2) as head:
        inp = Path(tmp) / "filter"
        write_filter_output(inp, [pa.Table.from_pylist(rows, schema=KEPT_SCHEMA)])
        for verify in ("estimated",) if args.smoke else ("estimated", "none"):
            out = Path(tmp) / f"dedup-{verify}"
            seconds = run_stage(head, inp, out, [f"near.verify={verify}"], code)
            duplicates = pq.read_table(str(out / "duplicates"))
            result = evaluate(rows, family, made, duplicates)
            result["stage_seconds"] = round(seconds, 1)
            result["stage_graph"] = json.loads((out / "stats.json").read_text())["graph"]
            results[f"verify={verify}"] = result
            print(json.dumps({f"verify={verify}": result}, indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
