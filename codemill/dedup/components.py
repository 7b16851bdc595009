"""Connected components of the duplicate graph by alternating large-star and small-star steps
(Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).

Each step needs only the neighbours of one node at a time, so the edge list can be split by node into
any number of partitions and each partition processed on its own; the graph shrinks to one star per
component, centred on its smallest node, in O(log^2 n) rounds (a handful in practice). Pure numpy on
int64 (node, neighbour) arrays; the stage routes the pairs between partitions (graph.py).
"""

from __future__ import annotations

import numpy as np

from codemill.dedup.lsh import unique_pairs


def _neighbourhoods(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct pairs without self-loops, sorted by (u, v); each node's first row and its degree."""
    keep = u != v
    u, v = u[keep], v[keep]
    first = unique_pairs(u, v)
    u, v = u[first], v[first]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.zeros(0, np.int64)
    degree = np.diff(np.append(starts, len(u)))
    return u, v, starts, degree


Edges = tuple[np.ndarray, np.ndarray]


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[Edges, Edges, int]:
    """One large-star step over every node of a partition, given all its neighbours (pairs in both
    orientations): each larger neighbour links to the smallest node of the neighbourhood.

    Returns the new edges (larger, smaller), each node's current root (its smallest neighbour or itself),
    and how many nodes are unsettled (a smaller neighbour and more than one neighbour). When no node of
    any partition is unsettled, every component is a star and the roots are the components' smallest nodes.
    """
    u, v, starts, degree = _neighbourhoods(u, v)
    nodes = u[starts]
    roots = np.minimum(nodes, v[starts])  # v is sorted within a node: its first row is the smallest
    per_row = np.repeat(roots, degree)
    larger = v > u
    unsettled = int(np.count_nonzero((v[starts] < nodes) & (degree > 1)))
    return (v[larger], per_row[larger]), (nodes, roots), unsettled


def small_star(u: np.ndarray, v: np.ndarray) -> Edges:
    """One small-star step over pairs (larger, smaller) grouped by their larger node: the node and its
    smaller neighbours all link to the smallest of them. Returns the new edges (larger, smaller)."""
    u, v, starts, degree = _neighbourhoods(u, v)
    nodes, roots = u[starts], v[starts]
    per_row = np.repeat(roots, degree)
    other = v != per_row
    return np.concatenate([v[other], nodes]), np.concatenate([per_row[other], roots])
