"""Training rows from the tokenize stage's shards, through its memory-mapped `ShardReader`.

The rows of optimizer step n on a rank are a pure function of (seed, epoch, n): each epoch's order comes
from `reader.rank_indices(rank, world_size, epoch, seed)`, and step n takes the next `rows_per_step` of
them. A resumed run therefore reads exactly the rows an uninterrupted run would have read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codemill.train.model import IGNORE_INDEX


@dataclass(frozen=True)
class Batch:
    tokens: np.ndarray        # int64 [b, s]: the ids read
    labels: np.ndarray        # int64 [b, s]: the id after each, IGNORE_INDEX past the content's end
    document_ids: np.ndarray  # int64 [b, s]: which document piece of the row each position belongs to
    languages: tuple[str, ...]


def make_batch(reader, indices: np.ndarray, seq_length: int) -> Batch:
    """Rows `indices`, cropped to `seq_length` + 1 ids (the stored rows hold 2,049)."""
    if seq_length + 1 > reader.seq_len:
        raise ValueError(f"seq_length {seq_length} needs rows of {seq_length + 1} ids; "
                         f"the shards hold {reader.seq_len}")
    rows = np.asarray(reader.rows(indices))[:, : seq_length + 1].astype(np.int64)
    tokens, labels = rows[:, :-1], rows[:, 1:].copy()
    positions = np.arange(seq_length)
    n_tokens = np.array([reader.n_tokens(int(i)) for i in indices])
    labels[positions[None, :] + 1 >= n_tokens[:, None]] = IGNORE_INDEX  # the target is padding
    # A row's language tag precedes its first document piece: it counts as part of that piece.
    document_ids = np.stack([np.searchsorted(np.asarray(reader.doc_starts(int(i))), positions, side="right")
                             for i in indices]).clip(min=1).astype(np.int64)
    return Batch(tokens, labels, document_ids, tuple(reader.language(int(i)) for i in indices))


class RankRows:
    """Which rows a rank reads at each optimizer step."""

    def __init__(self, reader, rank: int, world_size: int, seed: int, rows_per_step: int):
        self.reader, self.rank, self.world_size, self.seed = reader, rank, world_size, seed
        self.rows_per_step = rows_per_step
        # Every rank must agree on where epochs end, so the shortest rank slice sets the epoch length.
        shortest = min(len(reader.rank_indices(r, world_size, 0, seed)) for r in range(world_size))
        self.steps_per_epoch = shortest // rows_per_step
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(reader)} rows over {world_size} workers is less than one step of "
                             f"{rows_per_step} rows per worker: use a smaller batch or more data")
        self._order: tuple[int, np.ndarray] | None = None

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, row offset within this rank's order of that epoch) where `step` starts."""
        return step // self.steps_per_epoch, (step % self.steps_per_epoch) * self.rows_per_step

    def rows_of_step(self, step: int) -> np.ndarray:
        epoch, offset = self.position(step)
        if self._order is None or self._order[0] != epoch:
            order = np.asarray(self.reader.rank_indices(self.rank, self.world_size, epoch, self.seed))
            self._order = (epoch, order)
        return self._order[1][offset: offset + self.rows_per_step]


def validation_rows(reader, rank: int, world_size: int, seed: int, n_rows: int) -> np.ndarray:
    """A fixed sample of this rank's validation rows (the same at every evaluation)."""
    return np.asarray(reader.rank_indices(rank, world_size, 0, seed))[:n_rows]
