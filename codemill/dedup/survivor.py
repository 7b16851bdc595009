"""Which copy of a duplicate cluster survives.

Rule, applied in order until one document is left:
1. more stars on its repository (a null star count counts as 0): the better-known copy is the one
   people find and cite;
2. fewer path components (`src/util.py` before `vendor/x/src/util.py`): a file near the repository root
   is more likely the original than a vendored or copied one;
3. the lexicographically smaller path (stable, and prefers e.g. `a.py` over `a_copy.py`);
4. the smaller doc_id.
Every step uses only the document's own columns, so the choice does not depend on partitioning.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def path_depth(paths: pa.Array | pa.ChunkedArray) -> np.ndarray:
    parts = pc.list_value_length(pc.split_pattern(pc.fill_null(paths, ""), "/"))
    return np.asarray(parts.to_numpy(zero_copy_only=False), dtype=np.int64)


def survivor_order(table: pa.Table) -> np.ndarray:
    """Row indices of `table` (repo_stars, path, doc_id) from most to least preferred survivor."""
    ranked = pa.table({
        "neg_stars": pc.negate(pc.fill_null(table["repo_stars"], 0).cast(pa.int64())),
        "depth": pa.array(path_depth(table["path"])),
        "path": pc.fill_null(table["path"], ""),
        "doc_id": table["doc_id"],
    })
    return pc.sort_indices(ranked, sort_keys=[("neg_stars", "ascending"), ("depth", "ascending"),
                                              ("path", "ascending"), ("doc_id", "ascending")]).to_numpy()


def choose_survivors(table: pa.Table, component: np.ndarray) -> np.ndarray:
    """For each row, the row index of its component's survivor."""
    order = survivor_order(table)
    # np.unique's return_index is each component's first position in preference order: its survivor.
    components, first = np.unique(component[order], return_index=True)
    return order[first][np.searchsorted(components, component)]
