"""The duplicate graph, from band and exact-key rows to removed documents, in steps whose state lives
in spilled groups (spill.py) on the stage's storage: no step holds more than one group, and the process
that runs the steps (the stage's driver) holds only counts.

1. bucket edges: each band (or exact-key) partition yields star edges, grouped by the sketch chunk of
   their smaller end (locators.py);
2. source signatures: each chunk's distinct edges, with the signatures of their smaller ends, regrouped
   by the chunk of their larger end;
3. verify: each chunk compares those with its own signatures and keeps the edges at or above the
   threshold (or every edge, without verification);
4. components: large-star / small-star rounds (components.py) over edges partitioned by node hash,
   until every component is a star around its smallest locator;
5. members: each chunk attaches its sketch rows to its clustered documents, grouped by cluster;
6. resolve: each cluster partition picks survivors and writes its part of `duplicates/`, and the
   removed documents' locators, grouped by input file (for the kept-writer).

Steps are plain functions; `find_duplicates` runs them through a `map_fn(step, list of argument tuples)
-> list of results`: the stage passes one that runs them as Ray tasks, tests pass the builtin map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codemill import storage
from codemill.dedup import spill
from codemill.dedup.components import large_star, small_star
from codemill.dedup.locators import chunk_of, file_of
from codemill.dedup.lsh import star_pairs, unique_pairs
from codemill.dedup.resolve import pairwise_jaccard, resolve_members, signature_matrix

# Folders under the work root.
SKETCH = "sketch"
BANDS = "bands"
EXACT = "exact"
EDGES = "edges"
SOURCE_EDGES = "source-edges"
SOURCE_SIGNATURES = "source-signatures"
MEMBERS = "members"
REMOVED = "removed"

BAND_SCHEMA = pa.schema([("key", pa.uint64()), ("node", pa.int64()), ("loc", pa.int64())])
EXACT_SCHEMA = pa.schema([("exact_hi", pa.uint64()), ("exact_lo", pa.uint64()), ("node", pa.int64()),
                          ("loc", pa.int64())])
EDGE_SCHEMA = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("src_loc", pa.int64()), ("dst_loc", pa.int64())])
PAIR_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])
ROOT_SCHEMA = pa.schema([("loc", pa.int64()), ("root", pa.int64())])
REMOVED_SCHEMA = pa.schema([("loc", pa.int64())])
SKETCH_COLUMNS = ["loc", "node", "doc_id", "repo_stars", "path", "language", "exact_hi", "exact_lo", "signature"]

MapFn = Callable[[Callable, list[tuple]], list]


def sketch_schema(num_perm: int) -> pa.Schema:
    return pa.schema([("loc", pa.int64()), ("node", pa.int64()), ("doc_id", pa.string()), ("repo_stars", pa.int64()),
                      ("path", pa.string()), ("language", pa.string()), ("exact_hi", pa.uint64()),
                      ("exact_lo", pa.uint64()), ("signature", pa.binary(4 * num_perm))])


@dataclass(frozen=True)
class GraphPlan:
    work: str  # root of the spilled state
    duplicates: str  # the stage's duplicates/ folder
    num_perm: int
    verify_threshold: float | None  # None: every candidate edge is an edge
    edge_rows_per_partition: int  # edge pairs per components partition
    member_rows_per_partition: int  # cluster members per resolve partition

    def dir(self, *parts: str) -> str:
        return storage.join(self.work, *parts)

    def edge_partitions(self, pairs: int) -> int:
        return max(1, math.ceil(pairs / self.edge_rows_per_partition))

    def member_partitions(self, members: int) -> int:
        return max(1, math.ceil(members / self.member_rows_per_partition))


def _positions(locs: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted locator in `locs` (all must be there)."""
    if len(wanted) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(locs, kind="stable")
    pos = order[np.clip(np.searchsorted(locs[order], wanted), 0, len(locs) - 1)] if len(locs) else wanted
    if not len(locs) or not np.array_equal(locs[pos], wanted):
        raise RuntimeError("a locator of the duplicate graph has no sketch row: the spilled sketch is incomplete")
    return pos


def _chunk_signatures(plan: GraphPlan, chunk: int, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(locators, signatures) of the chunk's sketch rows among `wanted`: the others are dropped while
    reading, so a step holds the signatures of its edges' documents, not the whole chunk's (~64 MB)."""
    rows = spill.read_group(plan.dir(SKETCH), chunk, sketch_schema(plan.num_perm), ["loc", "signature"],
                            filter=pc.field("loc").isin(np.unique(wanted)))
    return rows["loc"].to_numpy(), signature_matrix(rows["signature"], plan.num_perm)


def write_undirected(u: np.ndarray, v: np.ndarray, root: str, n_partitions: int, writer: str) -> None:
    """Both orientations of each edge, grouped by the hash of their first node (large-star's input)."""
    first, second = np.concatenate([u, v]), np.concatenate([v, u])
    spill.write_groups(pa.table({"u": first, "v": second}), spill.hash_partition(first, n_partitions), root, writer)


def bucket_edges(plan: GraphPlan, folder: str, partition: int) -> int:
    """Step 1: the star edges of one band (or exact-key) partition, grouped by their source's chunk."""
    schema = BAND_SCHEMA if folder == BANDS else EXACT_SCHEMA
    rows = spill.read_group(plan.dir(folder), partition, schema)
    key_columns = ["key"] if folder == BANDS else ["exact_hi", "exact_lo"]
    keys = np.stack([rows[c].to_numpy() for c in key_columns], axis=1)
    nodes, locs = rows["node"].to_numpy(), rows["loc"].to_numpy()
    centre, member = star_pairs(keys, nodes)
    edges = pa.table({"src": nodes[centre], "dst": nodes[member], "src_loc": locs[centre], "dst_loc": locs[member]},
                     schema=EDGE_SCHEMA)
    spill.write_groups(edges, chunk_of(locs[centre]), plan.dir(EDGES), f"{folder}-{partition:06d}")
    return edges.num_rows


def source_signatures(plan: GraphPlan, chunk: int, star_partitions: int) -> int:
    """Step 2: one chunk's distinct candidate edges (an edge found in several partitions has one source,
    so its copies all meet here). With verification, they go on to their destination's chunk with the
    signatures of their sources; without, they are the graph."""
    edges = spill.read_group(plan.dir(EDGES), chunk, EDGE_SCHEMA)
    edges = edges.take(unique_pairs(edges["src"].to_numpy(), edges["dst"].to_numpy()))
    src_loc, dst_loc = edges["src_loc"].to_numpy(), edges["dst_loc"].to_numpy()
    writer = f"{chunk:016x}"
    if plan.verify_threshold is None:
        write_undirected(src_loc, dst_loc, plan.dir("star-0", "large"), star_partitions, writer)
        return edges.num_rows
    dst_chunk = chunk_of(dst_loc)
    spill.write_groups(edges.select(["src_loc", "dst_loc"]), dst_chunk, plan.dir(SOURCE_EDGES), writer)
    needed = unique_pairs(dst_chunk, src_loc)  # each source's signature once per destination chunk
    needed_locs = src_loc[needed]
    locs, sigs = _chunk_signatures(plan, chunk, needed_locs)
    table = pa.table({"loc": needed_locs, "signature": pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4 * plan.num_perm), len(needed),
        [None, pa.py_buffer(np.ascontiguousarray(sigs[_positions(locs, needed_locs)]).tobytes())])})
    spill.write_groups(table, dst_chunk[needed], plan.dir(SOURCE_SIGNATURES), writer)
    return edges.num_rows


def verify(plan: GraphPlan, chunk: int, star_partitions: int) -> int:
    """Step 3: the edges whose destination is in this chunk, kept when their signatures agree on at
    least `verify_threshold` of the permutations."""
    edges = spill.read_group(plan.dir(SOURCE_EDGES), chunk, EDGE_SCHEMA, ["src_loc", "dst_loc"])
    sources = spill.read_group(plan.dir(SOURCE_SIGNATURES), chunk,
                               pa.schema([("loc", pa.int64()), ("signature", pa.binary(4 * plan.num_perm))]))
    src_loc, dst_loc = edges["src_loc"].to_numpy(), edges["dst_loc"].to_numpy()
    source_locs = sources["loc"].to_numpy()
    source_sigs = signature_matrix(sources["signature"], plan.num_perm)
    locs, sigs = _chunk_signatures(plan, chunk, dst_loc)
    similarity = pairwise_jaccard(source_sigs, _positions(source_locs, src_loc), sigs, _positions(locs, dst_loc))
    keep = similarity >= plan.verify_threshold
    write_undirected(src_loc[keep], dst_loc[keep], plan.dir("star-0", "large"), star_partitions, f"{chunk:016x}")
    return int(np.count_nonzero(keep))


def star_round(plan: GraphPlan, step: str, round_: int, partition: int, n_partitions: int) -> tuple[int, int]:
    """Step 4, one partition of one large-star or small-star step. A large-star step also writes each
    node's current root, grouped by chunk: the labels, once no node is unsettled.
    Returns (unsettled nodes, nodes) for a large-star step, (0, 0) for a small-star one."""
    pairs = spill.read_group(plan.dir(f"star-{round_}", step), partition, PAIR_SCHEMA)
    u, v = pairs["u"].to_numpy(), pairs["v"].to_numpy()
    writer = f"{partition:06d}"
    if step == "large":
        (larger, smaller), (nodes, roots), unsettled = large_star(u, v)
        spill.write_groups(pa.table({"loc": nodes, "root": roots}), chunk_of(nodes),
                           plan.dir(f"star-{round_}", "roots"), writer)
        spill.write_groups(pa.table({"u": larger, "v": smaller}), spill.hash_partition(larger, n_partitions),
                           plan.dir(f"star-{round_}", "small"), writer)
        return unsettled, len(nodes)
    larger, smaller = small_star(u, v)
    write_undirected(larger, smaller, plan.dir(f"star-{round_ + 1}", "large"), n_partitions, writer)
    return 0, 0


def attach_members(plan: GraphPlan, roots_dir: str, chunk: int, member_partitions: int) -> None:
    """Step 5: the sketch rows of this chunk's clustered documents, with their cluster's root, grouped
    by the hash of the root."""
    roots = spill.read_group(roots_dir, chunk, ROOT_SCHEMA)
    if roots.num_rows == 0:
        return
    # Only the clustered documents' rows: the chunk's other sketch rows (most of it) are dropped batch by
    # batch as they are read, instead of the whole chunk (~70 MB at 65,536 rows) being held at once.
    rows = spill.read_group(plan.dir(SKETCH), chunk, sketch_schema(plan.num_perm),
                            filter=pc.field("loc").isin(roots["loc"]))
    members = rows.take(_positions(rows["loc"].to_numpy(), roots["loc"].to_numpy()))
    members = members.append_column("root", roots["root"])
    spill.write_groups(members, spill.hash_partition(roots["root"].to_numpy(), member_partitions),
                       plan.dir(MEMBERS), f"{chunk:016x}")


def resolve(plan: GraphPlan, partition: int) -> dict:
    """Step 6: one partition of whole clusters to its duplicates file and removed locators.
    Returns its cluster count and removed documents per language."""
    schema = sketch_schema(plan.num_perm).append(pa.field("root", pa.int64()))
    members = spill.read_group(plan.dir(MEMBERS), partition, schema)
    duplicates, removed = resolve_members(members, plan.num_perm)
    if duplicates.num_rows:
        storage.write_table(duplicates, storage.join(plan.duplicates, f"part-{partition:05d}.parquet"))
    locs = members["loc"].to_numpy()[removed]
    spill.write_groups(pa.table({"loc": locs}), file_of(locs), plan.dir(REMOVED), f"clusters-{partition:06d}")
    return {"clusters": len(np.unique(members["root"].to_numpy())),
            "removed": removed_counts(duplicates)}


def removed_counts(duplicates: pa.Table) -> dict[tuple[str | None, str], int]:
    """Removed documents per (language, kind)."""
    grouped = duplicates.group_by(["language", "kind"]).aggregate([("kind", "count")])
    return {(lang, kind): n for lang, kind, n in zip(grouped["language"].to_pylist(), grouped["kind"].to_pylist(),
                                                     grouped["kind_count"].to_pylist())}


def components(plan: GraphPlan, n_partitions: int, map_fn: MapFn) -> tuple[str, int, int]:
    """Step 4 over the undirected edges in star-0/large: large-star and small-star steps until every
    component is a star. Returns the folder of the final roots (grouped by chunk), the number of nodes,
    and the number of large-star steps."""
    round_ = 0
    while True:
        large = map_fn(star_round, [(plan, "large", round_, p, n_partitions) for p in range(n_partitions)])
        if sum(unsettled for unsettled, _ in large) == 0:
            return plan.dir(f"star-{round_}", "roots"), sum(nodes for _, nodes in large), round_ + 1
        map_fn(star_round, [(plan, "small", round_, p, n_partitions) for p in range(n_partitions)])
        round_ += 1


def find_duplicates(plan: GraphPlan, chunks: list[int], band_partitions: int, exact_partitions: int,
                    map_fn: MapFn) -> dict:
    """Steps 1-6 over a spilled sketch and its band and exact rows. Returns the graph's counts and the
    removed documents per (language, kind)."""
    found = map_fn(bucket_edges, [(plan, BANDS, p) for p in range(band_partitions)]
                   + [(plan, EXACT, p) for p in range(exact_partitions)])
    # Components partitions hold both orientations of every edge. Without verification the distinct
    # edges are written before they are counted: their copies from several band partitions are counted.
    star_partitions = plan.edge_partitions(2 * sum(found))
    candidates = sum(map_fn(source_signatures, [(plan, c, star_partitions) for c in chunks]))
    counts = {"candidate_edges": candidates, "verified_edges": candidates}
    if plan.verify_threshold is not None:
        star_partitions = plan.edge_partitions(2 * candidates)
        counts["verified_edges"] = sum(map_fn(verify, [(plan, c, star_partitions) for c in chunks]))
    roots_dir, clustered, counts["component_rounds"] = components(plan, star_partitions, map_fn)
    member_partitions = plan.member_partitions(clustered)
    map_fn(attach_members, [(plan, roots_dir, c, member_partitions) for c in chunks])
    resolved = map_fn(resolve, [(plan, p) for p in range(member_partitions)])
    counts["clusters"] = sum(r["clusters"] for r in resolved)
    removed: dict[tuple[str | None, str], int] = {}
    for r in resolved:
        for key, n in r["removed"].items():
            removed[key] = removed.get(key, 0) + n
    return {"graph": counts, "removed": removed}
