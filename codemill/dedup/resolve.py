"""From candidate edges and the rows of the documents they touch to the list of removed duplicates.

Pure logic on numpy arrays and Arrow tables: verify candidate pairs by estimated Jaccard, find the
connected components, choose each component's survivor, and label every other member: `exact` when a
preferred member of its cluster has the same normalised content (similarity 1.0), otherwise `near`
(similarity: estimated Jaccard to the survivor). `kept_doc_id` is always the cluster's survivor.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from codemill.dedup.components import connected_components
from codemill.dedup.minhash import estimated_jaccard
from codemill.dedup.survivor import choose_survivors, survivor_order

KIND_EXACT = "exact"
KIND_NEAR = "near"
KIND_CONTAMINATION = "contamination"
KINDS = (KIND_EXACT, KIND_NEAR, KIND_CONTAMINATION)
VERIFY_CHUNK = 65536  # edges compared at a time: bounds the temporary signature copies to ~130 MB

DUPLICATES_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("cluster_id", pa.int64()), ("kept_doc_id", pa.string()),
    ("kind", pa.string()), ("similarity", pa.float64()), ("language", pa.string()),
    ("benchmark_task_id", pa.string()),
])


def signature_matrix(column: pa.Array | pa.ChunkedArray, num_perm: int) -> np.ndarray:
    """A fixed_size_binary(4 * num_perm) column of signatures as a uint32 [n, num_perm] array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.binary(4 * num_perm))
    if len(column) == 0:
        return np.zeros((0, num_perm), np.uint32)
    data = np.frombuffer(column.buffers()[1], dtype=np.uint32)
    return data[column.offset * num_perm:(column.offset + len(column)) * num_perm].reshape(-1, num_perm)


def signature_column(signatures: np.ndarray) -> pa.FixedSizeBinaryArray:
    n, num_perm = signatures.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * num_perm), n,
                                                [None, pa.py_buffer(np.ascontiguousarray(signatures).tobytes())])


def verify_edges(src_rows: np.ndarray, dst_rows: np.ndarray, signatures: np.ndarray,
                 threshold: float) -> np.ndarray:
    """Mask of the edges whose endpoints' signatures agree on at least `threshold` of permutations."""
    keep = np.zeros(len(src_rows), dtype=bool)
    for start in range(0, len(src_rows), VERIFY_CHUNK):
        s, d = src_rows[start:start + VERIFY_CHUNK], dst_rows[start:start + VERIFY_CHUNK]
        keep[start:start + len(s)] = estimated_jaccard(signatures[s], signatures[d]) >= threshold
    return keep


def exact_group_heads(clustered: pa.Table, component: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """For each row, the preferred row with the same normalised content in the same cluster: exact
    copies keep one copy, and only that copy is compared with the cluster's survivor."""
    order = survivor_order(clustered)
    triples = np.stack([component[order].astype(np.uint64), hi[order], lo[order]], axis=1)
    _, first, inverse = np.unique(triples, axis=0, return_index=True, return_inverse=True)
    head = np.empty(len(order), np.int64)
    head[order] = order[first[inverse.ravel()]]
    return head


def resolve_clusters(src: np.ndarray, dst: np.ndarray, members: pa.Table, num_perm: int,
                     verify_threshold: float | None) -> tuple[pa.Table, dict]:
    """Duplicates (one row per removed document) and counts.

    `members` has one row per node that appears in an edge: node, doc_id, repo_stars, path, language,
    exact_hi, exact_lo, signature. `verify_threshold` None keeps every candidate edge.
    """
    members = members.sort_by("node")
    nodes = members["node"].to_numpy()
    signatures = signature_matrix(members["signature"], num_perm)
    src_rows, dst_rows = np.searchsorted(nodes, src), np.searchsorted(nodes, dst)
    counts = {"candidate_edges": int(len(src))}
    if verify_threshold is not None and len(src):
        keep = verify_edges(src_rows, dst_rows, signatures, verify_threshold)
        src_rows, dst_rows = src_rows[keep], dst_rows[keep]
    counts["verified_edges"] = int(len(src_rows))
    rows, component = connected_components(src_rows, dst_rows)
    counts["clusters"] = int(len(np.unique(component)))
    if len(rows) == 0:
        return DUPLICATES_SCHEMA.empty_table(), counts
    clustered = members.take(rows)
    survivor = choose_survivors(clustered, component)
    hi, lo = clustered["exact_hi"].to_numpy(), clustered["exact_lo"].to_numpy()
    head = exact_group_heads(clustered, component, hi, lo)
    removed = np.flatnonzero(survivor != np.arange(len(rows)))
    keeper = survivor[removed]
    exact = head[removed] != removed  # a better copy with the same normalised content is in the cluster
    similarity = np.where(exact, 1.0, estimated_jaccard(signatures[rows[removed]], signatures[rows[keeper]]))
    doc_ids = clustered["doc_id"]
    table = pa.table({
        "doc_id": doc_ids.take(removed),
        # members are sorted by node, so a component's smallest row is its smallest node id
        "cluster_id": pa.array(nodes[component[removed]], pa.int64()),
        "kept_doc_id": doc_ids.take(keeper),
        "kind": pa.array(np.where(exact, KIND_EXACT, KIND_NEAR).tolist(), pa.string()),
        "similarity": pa.array(similarity, pa.float64()),
        "language": clustered["language"].take(removed),
        "benchmark_task_id": pa.nulls(len(removed), pa.string()),
    }, schema=DUPLICATES_SCHEMA)
    return table, counts
