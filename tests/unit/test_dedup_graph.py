"""Unit tests of the distributed duplicate graph: large-star / small-star components against a reference
union-find on random graphs split into many partitions, spilled groups, and the whole graph pipeline run
in-process (no Ray) giving the same duplicates however it is partitioned."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dedup_corpus import write_filter_output

from codemill.config import build_config
from codemill.dedup import spill
from codemill.dedup.components import large_star, small_star
from codemill.dedup.config import DedupConfig
from codemill.dedup.graph import ROOT_SCHEMA, GraphPlan, components, write_undirected
from codemill.dedup.locators import CHUNK_BITS, chunk_of, file_of, locators, row_of
from codemill.dedup.stage import _dedup
from codemill.runner import StageRun


def serial_map(step, arguments):
    return [step(*args) for args in arguments]


def union_find_roots(u: np.ndarray, v: np.ndarray) -> dict[int, int]:
    """Reference: each node's smallest component member, by union-find."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u.tolist(), v.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def random_graph(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(10**12, size=400, replace=False).astype(np.int64)  # labels in random order
    if kind == "chain":
        return ids[:-1], ids[1:]
    if kind == "cycles":
        ring = np.arange(len(ids))
        return ids, ids[(ring + 1) % len(ids) + np.where(ring % 50 == 49, -50, 0)]  # 8 rings of 50
    if kind == "stars":
        centres = ids[rng.integers(0, 5, len(ids))]
        return centres, ids
    if kind == "random":
        n_edges = 350  # below the connectivity threshold: many components of many shapes
        u, v = ids[rng.integers(0, len(ids), n_edges)], ids[rng.integers(0, len(ids), n_edges)]
        return u[u != v], v[u != v]  # the stage's edges never join a document to itself
    raise ValueError(kind)


def star_components_in_memory(u: np.ndarray, v: np.ndarray, n_partitions: int) -> tuple[dict[int, int], int]:
    """The large-star / small-star rounds with each step run partition by partition, as graph.py routes them."""
    def split(a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        part = spill.hash_partition(a, n_partitions)
        return [(a[part == p], b[part == p]) for p in range(n_partitions)]

    a, b = np.concatenate([u, v]), np.concatenate([v, u])
    for rounds in range(1, 100):
        large = [large_star(pa_, pb) for pa_, pb in split(a, b)]
        if sum(unsettled for _, _, unsettled in large) == 0:
            roots = {}
            for _, (nodes, node_roots), _ in large:
                roots.update(zip(nodes.tolist(), node_roots.tolist()))
            return roots, rounds
        small_u = np.concatenate([edges[0] for edges, _, _ in large])
        small_v = np.concatenate([edges[1] for edges, _, _ in large])
        assert np.all(small_u > small_v)
        small = [small_star(pa_, pb) for pa_, pb in split(small_u, small_v)]
        su, sv = np.concatenate([s[0] for s in small]), np.concatenate([s[1] for s in small])
        a, b = np.concatenate([su, sv]), np.concatenate([sv, su])
    raise AssertionError("no convergence in 100 rounds")


@pytest.mark.parametrize("kind", ["chain", "cycles", "stars", "random"])
@pytest.mark.parametrize("n_partitions", [1, 3, 16])
def test_star_components_equal_union_find(kind, n_partitions):
    rng = np.random.default_rng(abs(hash((kind, n_partitions))) % 2**32)
    for _ in range(5):
        u, v = random_graph(kind, rng)
        roots, rounds = star_components_in_memory(u, v, n_partitions)
        expected = union_find_roots(u, v)
        expected = {n: r for n, r in expected.items() if n in set(u.tolist()) | set(v.tolist())}
        assert roots == expected
        assert rounds <= 30  # O(log^2 n): a 400-node chain must not take one round per node


def test_star_steps_drop_self_loops_and_repeated_pairs():
    (larger, smaller), (nodes, roots), unsettled = large_star(np.array([5, 5, 5, 7, 9, 9]),
                                                              np.array([9, 9, 5, 9, 5, 7]))
    assert nodes.tolist() == [5, 7, 9] and roots.tolist() == [5, 7, 5]
    assert sorted(zip(larger.tolist(), smaller.tolist())) == [(9, 5), (9, 7)] and unsettled == 1
    u, v = small_star(np.array([9, 9, 9]), np.array([5, 7, 7]))
    assert sorted(zip(u.tolist(), v.tolist())) == [(7, 5), (9, 5)]


@pytest.mark.parametrize("n_partitions", [1, 5])
def test_spilled_components_equal_union_find(tmp_path, n_partitions):
    rng = np.random.default_rng(n_partitions)
    plan = GraphPlan(work=str(tmp_path), duplicates=str(tmp_path / "dups"), num_perm=8, verify_threshold=None,
                     edge_rows_per_partition=10, member_rows_per_partition=10)
    # locators spread over several chunks and files, as the stage makes them
    locs = np.concatenate([locators(f, c << CHUNK_BITS, 40) for f in range(3) for c in range(2)])
    u, v = locs[rng.integers(0, len(locs), 200)], locs[rng.integers(0, len(locs), 200)]
    u, v = u[u != v], v[u != v]
    write_undirected(u[:90], v[:90], plan.dir("star-0", "large"), n_partitions, "a")
    write_undirected(u[90:], v[90:], plan.dir("star-0", "large"), n_partitions, "b")
    roots_dir, n_nodes, rounds = components(plan, n_partitions, serial_map)
    found = {}
    for chunk in np.unique(chunk_of(locs)).tolist():
        group = spill.read_group(roots_dir, chunk, ROOT_SCHEMA)
        assert np.all(chunk_of(group["loc"].to_numpy()) == chunk)  # grouped by chunk for the member join
        found.update(zip(group["loc"].to_pylist(), group["root"].to_pylist()))
    expected = {n: r for n, r in union_find_roots(u, v).items() if n in set(u.tolist()) | set(v.tolist())}
    assert found == expected and n_nodes == len(expected) and rounds >= 1


def test_locators_and_spilled_groups(tmp_path):
    locs = locators(3, 70_000, 5)
    assert file_of(locs).tolist() == [3] * 5 and row_of(locs).tolist() == list(range(70_000, 70_005))
    assert np.all(chunk_of(locs) == chunk_of(locators(3, 1 << CHUNK_BITS, 1))[0])
    table = pa.table({"x": [1, 2, 3, 4]})
    spill.write_groups(table, np.array([7, 2, 7, 2]), str(tmp_path), "w1")
    spill.write_groups(table.slice(0, 1), np.array([7]), str(tmp_path), "w2")
    schema = pa.schema([("x", pa.int64())])
    assert sorted(spill.read_group(str(tmp_path), 7, schema)["x"].to_pylist()) == [1, 1, 3]
    assert spill.read_group(str(tmp_path), 2, schema)["x"].to_pylist() == [2, 4]
    assert spill.read_group(str(tmp_path), 99, schema).num_rows == 0


def _run_in_process(tmp_path, inp: str, name: str, overrides: list[str]) -> tuple[dict, list[dict], dict]:
    config = build_config(DedupConfig, overrides=overrides)
    out = str(tmp_path / name)
    counts = _dedup(StageRun("dedup", config, out, {"input": inp}), serial_map)
    dups = sorted(pq.read_table(f"{out}/duplicates").to_pylist(), key=lambda r: r["doc_id"])
    return counts, dups, json.loads((tmp_path / name / "stats.json").read_text())


def test_graph_pipeline_does_not_depend_on_partitioning(tmp_path):
    inp, table, expect = write_filter_output(str(tmp_path / "filter"))
    one, dups_one, stats_one = _run_in_process(tmp_path, inp, "one", ["docs_per_batch=64"])
    many, dups_many, stats_many = _run_in_process(tmp_path, inp, "many", [
        "docs_per_batch=7", "band_rows_per_partition=1000", "edge_rows_per_partition=5", "member_rows_per_partition=2"])
    assert dups_one == dups_many and dups_one
    assert {k: v for k, v in one.items() if k != "component_rounds"} == \
        {k: v for k, v in many.items() if k != "component_rounds"}
    assert stats_one["per_language"] == stats_many["per_language"]
    removed = {d["doc_id"] for d in dups_one}
    assert removed == set(expect["exact"]) | set(expect["near"]) | {
        r["doc_id"] for r in table.to_pylist() if r["repo"] == "x/leak-copy"}  # no decontamination here
    assert not (tmp_path / "many" / "_work").exists()  # the spilled state is removed
    kept = pq.read_table(str(tmp_path / "many" / "kept"))
    assert kept.num_rows == table.num_rows - len(removed) and set(kept.column_names) == set(table.column_names)
