"""Connected components of the duplicate graph, from its edge list alone.

Only nodes that have an edge are touched, so memory follows the number of edges (duplicate pairs),
not the number of documents: documents without a duplicate never reach this code.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_components


def connected_components(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, component) for every node that has an edge: nodes sorted, component = the smallest
    node of its component, so the labelling does not depend on edge order or partitioning."""
    if len(src) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    nodes, dense = np.unique(np.concatenate([src, dst]).astype(np.int64), return_inverse=True)
    n_edges = len(src)
    graph = coo_matrix((np.ones(n_edges, np.int8), (dense[:n_edges], dense[n_edges:])), shape=(len(nodes),) * 2)
    _, labels = _scipy_components(graph, directed=False)
    # nodes are sorted, so the first node seen for each label is that component's smallest node.
    first_of_label = np.full(labels.max() + 1, -1, np.int64)
    first_index = np.unique(labels, return_index=True)[1]
    first_of_label[labels[first_index]] = nodes[first_index]
    return nodes, first_of_label[labels]
