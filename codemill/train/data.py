"""Training rows from the tokenize stage's shards, through its memory-mapped `ShardReader`.

The rows of optimizer step n on a rank are a pure function of (seed, epoch, n): each epoch's order comes
from `reader.rank_indices(rank, world_size, epoch, seed)`, and step n takes the next `rows_per_step` of
them. A resumed run therefore reads exactly the rows an uninterrupted run would have read.

`data.languages` narrows a split to the rows of some languages (`LanguageRows`), chosen by each row's
`language` column: the tokens are never decoded, so one tokenize output serves every language mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

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


def row_languages(reader) -> tuple[np.ndarray, tuple[str, ...]]:
    """(code of each row of `reader`'s split, the names the codes index), read from the shards' `language`
    column alone: memory-mapped, so only that column's few bytes per row are touched."""
    from codemill.languages import LANGUAGE_NAMES

    # The reader maps the split's shards from the folder that holds its tokenizer (the output itself, or
    # the local cache of an s3:// output).
    root = Path(reader.tokenizer_path).parent
    codes = []
    for entry in reader.manifest["splits"][reader.split]["shards"]:
        shard = pa.ipc.open_file(pa.memory_map(str(root / entry["path"]), "r"))
        for b in range(shard.num_record_batches):
            language = shard.get_batch(b).column("language")
            to_global = np.array([LANGUAGE_NAMES.index(n) for n in language.dictionary.to_pylist()], np.int64)
            codes.append(to_global[language.indices.to_numpy(zero_copy_only=False)])
    codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    if len(codes) != len(reader):
        raise ValueError(f"{reader.uri}: the {reader.split} shards' language column has {len(codes)} rows, "
                         f"the reader {len(reader)}")
    return codes, LANGUAGE_NAMES


class LanguageRows:
    """The rows of some languages of a reader's split, read like the reader itself: row i of this view is
    global row `indices[i]`, and each epoch permutes the view's rows as the reader permutes all of its."""

    def __init__(self, reader, languages: list[str]):
        codes, names = row_languages(reader)
        wanted = [names.index(name) for name in languages]
        self.reader, self.languages = reader, tuple(languages)
        self.indices = np.flatnonzero(np.isin(codes, wanted))
        self.seq_len, self.tokenizer_path = reader.seq_len, reader.tokenizer_path

    def __len__(self) -> int:
        return len(self.indices)

    def rank_indices(self, rank: int, world_size: int, epoch: int, seed: int) -> np.ndarray:
        """Global rows, as `ShardReader.rank_indices` deals them, over this view's rows only."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        return self.indices[order[rank::world_size]]

    # Rows are addressed by their global index, so reading one is the reader's job.
    def rows(self, indices: np.ndarray) -> np.ndarray:
        return self.reader.rows(indices)

    def n_tokens(self, i: int) -> int:
        return self.reader.n_tokens(i)

    def language(self, i: int) -> str:
        return self.reader.language(i)

    def doc_starts(self, i: int) -> np.ndarray:
        return self.reader.doc_starts(i)


def select_languages(reader, languages: list[str] | None):
    """The reader itself for all languages, else the view of the given ones."""
    return reader if languages is None else LanguageRows(reader, languages)


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
