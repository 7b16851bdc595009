"""Unit tests of the dedup logic: shingling, signatures (equal to datasketch's), banding, edges,
components, survivor choice, exact keys and decontamination. No Ray."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from codemill.dedup.decontam import build_index, find_contamination, load_index
from codemill.dedup.lsh import band_keys, optimal_bands_rows, star_edges
from codemill.dedup.minhash import estimated_jaccard, permutations, signatures
from codemill.dedup.normalize import exact_key, normalize
from codemill.dedup.resolve import resolve_members, signature_column
from codemill.dedup.shingles import code_tokens, jaccard, shingles
from codemill.dedup.survivor import choose_survivors, survivor_order
from codemill.humaneval import read_problems

REPO_ROOT = Path(__file__).resolve().parents[2]
HUMANEVAL_X = REPO_ROOT / "data" / "humaneval-x"  # shipped with the repository
HUMANEVAL_FILES = sorted(str(p) for p in HUMANEVAL_X.glob("*/humaneval_*.jsonl.gz"))

SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "int main() { printf(\"%d\\n\", x_1 + y2); return 0; }",
    "",
    "   \n\t ;;; {} ()",
    "one two",  # fewer tokens than a shingle
    "naïve = café + 東京; x = ∑(y) — z",  # non-ASCII identifiers and symbols
    "x = '" + "A" * 300 + "' + b + c + d + e",  # a shingle longer than one SHA-1 block
    "line\r\nwith crlf\r\nendings  \r\n",
] + [p.read_text() for p in sorted((REPO_ROOT / "codemill").glob("*.py"))]


def datasketch_signature(text: str, num_perm: int = 256, seed: int = 1, size: int = 5) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=seed)
    m.update_batch(sorted(shingles(text, size)))
    return m.hashvalues


def test_code_tokens_split_on_non_identifier_characters():
    assert code_tokens("foo.bar(x_1, 2) + naïve/東京") == ["foo", "bar", "x_1", "2", "naïve", "東京"]
    assert code_tokens(" ;{}()\n") == []


def test_shingles_are_space_joined_token_windows():
    assert shingles("a b c d e f", 5) == {b"a b c d e", b"b c d e f"}
    assert shingles("a(b)", 5) == {b"a b"}  # fewer tokens than the size: one shingle of all
    assert shingles("+-*/", 5) == set()
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5


def test_permutations_are_datasketch_permutations():
    for num_perm, seed in [(256, 1), (128, 42)]:
        a, b = permutations(num_perm, seed)
        ref = MinHash(num_perm=num_perm, seed=seed).permutations
        assert np.array_equal(a, ref[0]) and np.array_equal(b, ref[1])


@pytest.mark.parametrize("num_perm,seed,size", [(256, 1, 5), (64, 7, 3)])
def test_signatures_equal_datasketch_minhash(num_perm, seed, size):
    a, b = permutations(num_perm, seed)
    sigs, positions = signatures(pa.array(SAMPLES), size, a, b)
    assert sigs.shape == (len(SAMPLES), num_perm) and sigs.dtype == np.uint32
    for text, sig, pos in zip(SAMPLES, sigs, positions):
        assert np.array_equal(sig, datasketch_signature(text, num_perm, seed, size)), text[:60]
        assert (pos > 0) == bool(shingles(text, size))


def test_signatures_of_a_sliced_chunked_column_and_nulls():
    a, b = permutations(32, 1)
    column = pa.chunked_array([pa.array(SAMPLES[:3]), pa.array([None, SAMPLES[0]])]).slice(1)
    sigs, positions = signatures(column, 5, a, b)
    assert np.array_equal(sigs[-1], datasketch_signature(SAMPLES[0], 32))
    assert positions[2] == 0 and np.all(sigs[2] == np.uint32(0xFFFFFFFF))  # null = empty document


def test_estimated_jaccard_matches_datasketch():
    x = (REPO_ROOT / "codemill" / "config.py").read_text()
    y = x.replace("def ", "def  renamed_")
    a, b = permutations(256, 1)
    sigs, _ = signatures(pa.array([x, y]), 5, a, b)
    m1, m2 = MinHash(256), MinHash(256)
    m1.update_batch(shingles(x, 5))
    m2.update_batch(shingles(y, 5))
    assert estimated_jaccard(sigs[0], sigs[1]) == pytest.approx(m1.jaccard(m2))


@pytest.mark.parametrize("threshold,num_perm", [(0.7, 256), (0.5, 128), (0.9, 64)])
def test_bands_and_rows_are_chosen_as_datasketch_does(threshold, num_perm):
    assert optimal_bands_rows(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_band_keys_collide_only_on_equal_bands():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, size=(3, 20), dtype=np.uint32)
    sig[1] = sig[0]
    sig[1, 7] ^= 1  # differs from row 0 in band 1 (rows 5..9) only
    sig[2, 0:5] = sig[0, 0:5]  # same as row 0 in band 0 only
    keys = band_keys(sig, bands=4, rows=5)
    assert keys.shape == (3, 4) and keys.dtype == np.uint64
    assert [keys[0, j] == keys[1, j] for j in range(4)] == [True, False, True, True]
    assert [keys[0, j] == keys[2, j] for j in range(4)] == [True, False, False, False]
    same = np.zeros((1, 20), np.uint32)
    assert len(set(band_keys(same, 4, 5)[0])) == 4  # equal values in different bands: different keys


def test_star_edges_link_each_bucket_to_its_smallest_node():
    keys = np.array([5, 9, 5, 5, 7, 9, 9], dtype=np.uint64)
    nodes = np.array([30, 11, 20, 40, 50, 12, 11], dtype=np.int64)
    src, dst = star_edges(keys, nodes)
    assert sorted(zip(src.tolist(), dst.tolist())) == [(11, 12), (20, 30), (20, 40)]
    two_cols = np.array([[1, 2], [1, 3], [1, 2]], dtype=np.uint64)
    src, dst = star_edges(two_cols, np.array([3, 1, 2]))
    assert list(zip(src, dst)) == [(2, 3)]
    for empty in (np.zeros(0, np.uint64), np.zeros((0, 2), np.uint64)):  # a partition no document hashed to
        src, dst = star_edges(empty, np.zeros(0, np.int64))
        assert len(src) == len(dst) == 0


def test_survivor_rule_stars_then_depth_then_path_then_doc_id():
    table = pa.table({
        "doc_id": ["d5", "d4", "d3", "d2", "d1", "d0"],
        "repo_stars": [10, 50, 50, 50, None, 50],
        "path": ["a.py", "vendor/lib/a.py", "src/b.py", "src/a.py", "a.py", "src/a.py"],
    })
    order = survivor_order(table)
    assert table["doc_id"].take(order).to_pylist() == ["d0", "d2", "d3", "d4", "d5", "d1"]
    component = np.array([1, 1, 1, 2, 2, 3])
    assert choose_survivors(table, component).tolist() == [2, 2, 2, 3, 3, 5]
    # the choice does not depend on row order
    shuffled = table.take([5, 3, 1, 0, 2, 4])
    assert shuffled["doc_id"].take(choose_survivors(shuffled, component[[5, 3, 1, 0, 2, 4]])).to_pylist() == \
        ["d0", "d2", "d3", "d3", "d3", "d2"]


def test_normalisation_is_minimal():
    assert normalize("a  \r\nb\t\r\n\r\n") == "a\nb"
    assert normalize("x\ry") == "x\ny"
    assert exact_key("def f():\n    return 1  \n\n") == exact_key("def f():\r\n    return 1\r\n")
    assert exact_key("def f():\n    return 1\n") != exact_key("def f():\n  return 1\n")  # indentation counts
    assert exact_key(None) == exact_key("")


def _members(texts, stars, paths, exact_keys=None):
    a, b = permutations(256, 1)
    sigs, _ = signatures(pa.array(texts), 5, a, b)
    keys = exact_keys or list(range(len(texts)))
    return pa.table({
        "node": pa.array(np.arange(len(texts), dtype=np.int64) * 10 + 5),
        "doc_id": [f"doc{i}" for i in range(len(texts))], "repo_stars": stars, "path": paths,
        "language": ["Python"] * len(texts),
        "exact_hi": pa.array(np.array(keys, np.uint64)), "exact_lo": pa.array(np.zeros(len(texts), np.uint64)),
        "signature": signature_column(sigs),
    })


def test_resolve_members_labels_and_keeps_the_best_copy():
    base = (REPO_ROOT / "codemill" / "config.py").read_text()
    near = base.replace("import", "import  # x\nimport", 1)
    other = (REPO_ROOT / "codemill" / "storage.py").read_text()
    members = _members([base, base, near, other], [1, 5, 3, 9], ["a.py", "b.py", "c.py", "d.py"],
                       exact_keys=[7, 7, 8, 9])
    # one cluster (an exact copy and a near copy) and d.py alone in its own
    dups, removed = resolve_members(members.append_column("root", pa.array([0, 0, 0, 3])), 256)
    rows = {r["doc_id"]: r for r in dups.to_pylist()}
    assert set(rows) == {"doc0", "doc2"} and sorted(removed.tolist()) == [0, 2]
    assert rows["doc0"]["kind"] == "exact" and rows["doc0"]["similarity"] == 1.0
    assert rows["doc2"]["kind"] == "near" and 0.7 <= rows["doc2"]["similarity"] < 1.0
    assert {r["kept_doc_id"] for r in rows.values()} == {"doc1"} and {r["cluster_id"] for r in rows.values()} == {5}
    # all four in one cluster (an unverified LSH false positive joined them): d.py has 9 stars and survives
    together, _ = resolve_members(members.append_column("root", pa.array([3, 3, 3, 3])), 256)
    assert "doc1" in set(together["doc_id"].to_pylist()) and set(together["kept_doc_id"].to_pylist()) == {"doc3"}


@pytest.mark.skipif(not HUMANEVAL_FILES, reason="HumanEval-X data not found beside the repository")
def test_decontamination_flags_benchmark_solutions_not_boilerplate():
    index = load_index(HUMANEVAL_FILES, 13, ["prompt", "canonical_solution"], 3)
    assert index.n_problems == 164 and len(index.hashes) > 10_000
    problems = dict(read_problems(HUMANEVAL_FILES, ["prompt", "canonical_solution"]))
    python_solution = problems["Python/12"]
    wrapped = "# utilities\nimport sys\n\n" + python_solution + "\n\nif __name__ == '__main__':\n    main()\n"
    cpp_header = ("#include<stdio.h>\n#include<vector>\nusing namespace std;\n#include<algorithm>\n"
                  "#include<math.h>\n#include<stdlib.h>\nint main(){ return 0; }\n")
    docs = [wrapped, (REPO_ROOT / "codemill" / "config.py").read_text(), cpp_header]
    hits = find_contamination(pa.array(docs), index)
    assert hits.hits[0] > 0 and hits.task_ids[0] == "Python/12"
    assert hits.hits[1] == 0 and hits.task_ids[1] is None
    assert hits.hits[2] == 0  # the include block shared by every C++ problem is boilerplate


def test_decontamination_index_from_plain_jsonl(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"task_id": "X/0", "prompt": "def alpha_beta(gamma):", "canonical_solution": " return gamma * 2 + 1"},
            {"task_id": "X/1", "prompt": "def other(q):", "canonical_solution": " return q"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    index = build_index(read_problems([str(path)], ["prompt", "canonical_solution"]), 4, 3)
    hits = find_contamination(pa.array(["x = alpha_beta(gamma) return gamma", "nothing here at all ok"]), index)
    assert hits.hits.tolist()[1] == 0 and hits.hits[0] >= 1 and hits.task_ids[0] == "X/0"
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    assert read_problems([str(tmp_path / "b.jsonl.gz")], ["prompt"]) == [("X/0", "def alpha_beta(gamma):")]


def test_decontamination_against_mtpb_finds_its_turn_prompts():
    """MTPB has no task_id and no solution: its problems are indexed by description and turn prompts, and named
    MTPB/<id>; its problem numbers are not confused with HumanEval-X's (both have a problem 3)."""
    mtpb = REPO_ROOT / "data" / "mtpb" / "mtpb.jsonl"
    index = load_index([str(mtpb), *HUMANEVAL_FILES], 13, ["prompt", "canonical_solution"], 3)
    mtpb_records = [json.loads(line) for line in mtpb.read_text().splitlines() if line.strip()]
    assert index.n_problems == len(mtpb_records) + (164 if HUMANEVAL_FILES else 0)
    problem = next(r for r in mtpb_records if len(" ".join(r["prompts"]).split()) > 40)
    notebook = "import numpy as np\n\n" + "".join(f"# {p}\nx = 1\n" for p in problem["prompts"])
    hits = find_contamination(pa.array([notebook, (REPO_ROOT / "codemill" / "storage.py").read_text()]), index)
    assert hits.hits[0] > 0 and hits.task_ids[0] == f"MTPB/{problem['id']}"
    assert hits.hits[1] == 0


def test_exact_copies_keep_one_copy_even_when_a_near_copy_survives():
    base = (REPO_ROOT / "codemill" / "config.py").read_text()
    near = base.replace("import", "import  # x\nimport", 1)
    # rows: original (1 star), its exact copy (2 stars), a near copy (100 stars: the survivor)
    members = _members([base, base, near], [1, 2, 100], ["a.py", "b.py", "c.py"], exact_keys=[7, 7, 8])
    dups, _ = resolve_members(members.append_column("root", pa.array([1, 1, 1])), 256)
    rows = {r["doc_id"]: r for r in dups.to_pylist()}
    assert rows["doc0"]["kind"] == "exact" and rows["doc0"]["similarity"] == 1.0
    assert rows["doc1"]["kind"] == "near" and rows["doc1"]["similarity"] < 1.0
    assert {r["kept_doc_id"] for r in rows.values()} == {"doc2"}


def test_config_defaults_and_refusals():
    from codemill.config import ConfigError, build_config
    from codemill.dedup.config import DedupConfig

    config = DedupConfig()
    assert (config.near.shingle_size, config.near.num_perm, config.near.threshold) == (5, 256, 0.7)
    assert config.near.bands is None and config.decontaminate.paths == [] and config.decontaminate.ngram == 13
    assert build_config(DedupConfig, overrides=["near.bands=16", "near.rows=16"]).near.bands == 16
    for bad, message in ((["near.bands=16"], "set both near.bands and near.rows"),
                         (["near.bands=30", "near.rows=10"], "exceeds near.num_perm"),
                         (["near.threshold=1.5"], "near.threshold"), (["near.verify=exact"], "near.verify")):
        with pytest.raises(ConfigError, match=message):
            build_config(DedupConfig, overrides=bad)
