"""From the members of duplicate clusters to the list of removed duplicates.

Pure logic on numpy arrays and Arrow tables: choose each cluster's survivor, and label every other
member: `exact` when a preferred member of its cluster has the same normalised content (similarity 1.0),
otherwise `near` (similarity: estimated Jaccard to the survivor). `kept_doc_id` is always the cluster's
survivor, `cluster_id` the cluster's smallest node.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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


def pairwise_jaccard(left: np.ndarray, left_rows: np.ndarray, right: np.ndarray, right_rows: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of the signature pairs (left[left_rows[i]], right[right_rows[i]]), a chunk at a time."""
    out = np.empty(len(left_rows))
    for start in range(0, len(left_rows), VERIFY_CHUNK):
        end = start + VERIFY_CHUNK
        out[start:end] = estimated_jaccard(left[left_rows[start:end]], right[right_rows[start:end]])
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


def smallest_per_group(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each row, the smallest value among the rows of its group."""
    _, inverse = np.unique(groups, return_inverse=True)
    smallest = np.full(inverse.max() + 1 if len(inverse) else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(smallest, inverse, values)
    return smallest[inverse]


def resolve_members(members: pa.Table, num_perm: int) -> tuple[pa.Table, np.ndarray]:
    """Duplicates (one row per removed document) and the removed rows' indices in `members`.

    `members` holds every member of some clusters, whole: root (any id shared by the cluster's members
    alone), node, doc_id, repo_stars, path, language, exact_hi, exact_lo, signature.
    """
    if members.num_rows == 0:
        return DUPLICATES_SCHEMA.empty_table(), np.zeros(0, np.int64)
    component = members["root"].to_numpy()
    signatures = signature_matrix(members["signature"], num_perm)
    survivor = choose_survivors(members, component)
    hi, lo = members["exact_hi"].to_numpy(), members["exact_lo"].to_numpy()
    head = exact_group_heads(members, component, hi, lo)
    removed = np.flatnonzero(survivor != np.arange(members.num_rows))
    keeper = survivor[removed]
    exact = head[removed] != removed  # a better copy with the same normalised content is in the cluster
    similarity = np.where(exact, 1.0, pairwise_jaccard(signatures, removed, signatures, keeper))
    cluster_id = smallest_per_group(component, members["node"].to_numpy())
    doc_ids = members["doc_id"]
    table = pa.table({
        "doc_id": doc_ids.take(removed),
        "cluster_id": pa.array(cluster_id[removed], pa.int64()),
        "kept_doc_id": doc_ids.take(keeper),
        "kind": pa.array(np.where(exact, KIND_EXACT, KIND_NEAR).tolist(), pa.string()),
        "similarity": pa.array(similarity, pa.float64()),
        "language": members["language"].take(removed),
        "benchmark_task_id": pa.nulls(len(removed), pa.string()),
    }, schema=DUPLICATES_SCHEMA)
    return table, removed
