"""Locality-sensitive hashing over MinHash signatures: the band/row choice, band keys, and the
candidate edges of one shuffle partition.

Two documents become candidates when all `rows` values of one of the `bands` bands agree. A band's
key is a 64-bit hash of (band index, its rows); rows of (key, node) are hash-partitioned by key, and
each partition turns every bucket of two or more nodes into star edges to the bucket's smallest node
(k - 1 edges for k nodes instead of k (k - 1) / 2 pairs: the same connected components).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.integrate import quad

from codemill.hashing import mix64

_GOLDEN64 = np.uint64(0x9E3779B97F4A7C15)


def _false_positive_area(threshold: float, bands: int, rows: int) -> float:
    return quad(lambda s: 1 - (1 - s ** float(rows)) ** float(bands), 0.0, threshold)[0]


def _false_negative_area(threshold: float, bands: int, rows: int) -> float:
    return quad(lambda s: 1 - (1 - (1 - s ** float(rows)) ** float(bands)), threshold, 1.0)[0]


@functools.lru_cache(maxsize=64)
def optimal_bands_rows(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                       false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted areas under the false positive and false negative
    curves, searched exactly as datasketch.lsh._optimal_param does (first minimum wins)."""
    best, best_error = (0, 0), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            error = (_false_positive_area(threshold, bands, rows) * false_positive_weight
                     + _false_negative_area(threshold, bands, rows) * false_negative_weight)
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 keys [n_docs, bands]: key (i, j) hashes band j of document i, with j mixed in so that
    equal rows in different bands never share a bucket."""
    n_docs = signatures.shape[0]
    keys = np.empty((n_docs, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            h = np.full(n_docs, np.uint64(j + 1) * _GOLDEN64, dtype=np.uint64)
            for value in signatures[:, j * rows:(j + 1) * rows].T:
                h = mix64(h ^ value.astype(np.uint64))
            keys[:, j] = h
    return keys


def partition_of(keys: np.ndarray, n_partitions: int) -> np.ndarray:
    """The shuffle partition of each (already well mixed) key."""
    return (keys % np.uint64(n_partitions)).astype(np.int64)


def star_pairs(keys: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (centre, member) of the star edges of every key shared by two or more distinct nodes:
    each bucket's other nodes link to its smallest node. `keys` may be [n] or [n, k] (several key columns
    compared together). Each (centre node, member node) pair appears once."""
    keys2d = keys[:, None] if keys.ndim == 1 else keys
    order = np.lexsort((nodes,) + tuple(keys2d[:, c] for c in reversed(range(keys2d.shape[1]))))
    keys2d, sorted_nodes = keys2d[order], nodes[order]
    new_bucket = np.ones(len(sorted_nodes), dtype=bool)
    new_bucket[1:] = np.any(keys2d[1:] != keys2d[:-1], axis=1)
    bucket_start = np.maximum.accumulate(np.where(new_bucket, np.arange(len(sorted_nodes)), 0))
    member = (~new_bucket) & (sorted_nodes != sorted_nodes[bucket_start])
    centre, other = order[bucket_start[member]], order[member]
    first = unique_pairs(nodes[centre], nodes[other])
    return centre[first], other[first]


def star_edges(keys: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The star edges of `star_pairs` as (centre node, member node), sorted."""
    centre, member = star_pairs(keys, nodes)
    return nodes[centre].astype(np.int64), nodes[member].astype(np.int64)


def unique_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct (left, right) pair, in pair order."""
    if len(left) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((right, left))
    left, right = left[order], right[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
    return order[first]
