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


def pairwise_jaccard(left: np.ndarray, right: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of the row pairs (left[i], right[i]), a chunk at a time."""
    out = np.empty(len(left))
    for start in range(0, len(left), VERIFY_CHUNK):
        end = start + VERIFY_CHUNK
        out[start:end] = estimated_jaccard(signatures[left[start:end]], signatures[right[start:end]])
    return out


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
    if len(src) == 0:  # no candidate pairs (an empty or duplicate-free corpus): nothing to resolve
        return DUPLICATES_SCHEMA.empty_table(), {"candidate_edges": 0, "verified_edges": 0, "clusters": 0}
    signatures = signature_matrix(members["signature"], num_perm)
    members = members.drop_columns(["signature"])  # the caller's copy of the signatures can be freed
    nodes = members["node"].to_numpy()
    by_node = np.argsort(nodes, kind="stable")
    sorted_nodes = nodes[by_node]
    # Graph ids are ranks in node order, so a component's smallest id is its smallest node.
    src_rank, dst_rank = np.searchsorted(sorted_nodes, src), np.searchsorted(sorted_nodes, dst)
    counts = {"candidate_edges": len(src)}
    if verify_threshold is not None and len(src):
        keep = pairwise_jaccard(by_node[src_rank], by_node[dst_rank], signatures) >= verify_threshold
        src_rank, dst_rank = src_rank[keep], dst_rank[keep]
    counts["verified_edges"] = len(src_rank)
    ranks, component = connected_components(src_rank, dst_rank)
    counts["clusters"] = len(np.unique(component))
    if len(ranks) == 0:
        return DUPLICATES_SCHEMA.empty_table(), counts
    rows = by_node[ranks]
    clustered = members.take(rows)
    survivor = choose_survivors(clustered, component)
    hi, lo = clustered["exact_hi"].to_numpy(), clustered["exact_lo"].to_numpy()
    head = exact_group_heads(clustered, component, hi, lo)
    removed = np.flatnonzero(survivor != np.arange(len(rows)))
    keeper = survivor[removed]
    exact = head[removed] != removed  # a better copy with the same normalised content is in the cluster
    similarity = np.where(exact, 1.0, pairwise_jaccard(rows[removed], rows[keeper], signatures))
    doc_ids = clustered["doc_id"]
    table = pa.table({
        "doc_id": doc_ids.take(removed),
        "cluster_id": pa.array(sorted_nodes[component[removed]], pa.int64()),
        "kept_doc_id": doc_ids.take(keeper),
        "kind": pa.array(np.where(exact, KIND_EXACT, KIND_NEAR).tolist(), pa.string()),
        "similarity": pa.array(similarity, pa.float64()),
        "language": clustered["language"].take(removed),
        "benchmark_task_id": pa.nulls(len(removed), pa.string()),
    }, schema=DUPLICATES_SCHEMA)
    return table, counts
