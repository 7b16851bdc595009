"""Where a document lives: a 64-bit locator (input file index, row within that file).

Every later step finds a document's sketch row, and the kept-writer finds the rows to drop, from the
locator alone, so nothing maps documents to places in memory. Sketch rows are stored in chunks of
2^CHUNK_BITS consecutive rows of one input file: a chunk is the unit a join step reads.
"""

from __future__ import annotations

import numpy as np

ROW_BITS = 40  # up to 2^40 rows per input file, 2^23 input files
CHUNK_BITS = 16  # 65,536 sketch rows per chunk: ~70 MB with 256-permutation signatures
ROW_MASK = (1 << ROW_BITS) - 1


def locators(file_index: int, first_row: int, n_rows: int) -> np.ndarray:
    return (np.int64(file_index) << np.int64(ROW_BITS)) + np.arange(first_row, first_row + n_rows, dtype=np.int64)


def chunk_of(locs: np.ndarray) -> np.ndarray:
    return locs >> np.int64(CHUNK_BITS)


def file_of(locs: np.ndarray) -> np.ndarray:
    return locs >> np.int64(ROW_BITS)


def row_of(locs: np.ndarray) -> np.ndarray:
    return locs & np.int64(ROW_MASK)
