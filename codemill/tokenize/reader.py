"""Random access to the tokenize stage's rows: memory-mapped Arrow IPC shards, local or from S3.

    r = ShardReader("runs/demo/tokenize", split="train")   # or "s3://bucket/run/tokenize"
    r[i]                       # np.ndarray uint16 (seq_len,): a zero-copy view of the mapped shard
    r.rows(np.array([5, 2]))   # (2, seq_len) copy
    r.rank_indices(rank, world_size, epoch, seed)

Global row i is the i-th row of the split's shards read in name order (which is the shuffled order the
stage wrote). For an s3:// output the split's shards and `tokenizer.json` are downloaded once into a local
cache folder named by the hash of `manifest.json` (a new run of the stage gets a new folder), then mapped.
Only numpy and pyarrow are needed: the training process does not import `tokenizers` or Ray to read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from codemill import storage
from codemill.tokenize import shards
from codemill.tokenize.split import SPLITS, TRAIN

CACHE_ENV = "CODEMILL_SHARD_CACHE"
DEFAULT_CACHE = Path.home() / ".cache" / "codemill" / "shards"


class _MappedBatch:
    """One record batch of a mapped shard, as numpy views."""

    def __init__(self, batch: pa.RecordBatch, seq_len: int):
        ids = batch.column("input_ids")
        self.input_ids = ids.flatten().to_numpy(zero_copy_only=True).reshape(len(batch), seq_len)
        language = batch.column("language")
        names = language.dictionary.to_pylist()
        self.language_codes = language.indices.to_numpy(zero_copy_only=True)
        self.language_names = names
        self.n_tokens = batch.column("n_tokens").to_numpy(zero_copy_only=True)
        starts = batch.column("doc_starts")
        self.start_offsets = starts.offsets.to_numpy(zero_copy_only=True)
        self.start_values = starts.values.to_numpy(zero_copy_only=True)
        self.doc_ids = batch.column("doc_ids")
        self.first_continues = batch.column("first_continues")
        self.stream_row = batch.column("stream_row").to_numpy(zero_copy_only=True)


class ShardReader:
    """O(1) random access to the rows of one split of a tokenize output (see the module docstring)."""

    def __init__(self, uri: str, split: str = TRAIN, cache_dir: str | os.PathLike | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.uri = str(uri)
        self.split = split
        self.cache_dir = cache_dir
        manifest_bytes = shards.read_manifest_bytes(self.uri)
        self.manifest = shards.parse_manifest(manifest_bytes)
        self.manifest_hash = shards.manifest_hash(manifest_bytes)
        self.seq_len: int = self.manifest["seq_len"]
        entries = self.manifest["splits"][split]["shards"]
        root = self._local_root(cache_dir, [e["path"] for e in entries])
        self.tokenizer_path = str(root / shards.TOKENIZER_FILE)
        self._batches: list[_MappedBatch] = []
        for entry in entries:
            source = pa.memory_map(str(root / entry["path"]), "r")
            reader = pa.ipc.open_file(source)
            for b in range(reader.num_record_batches):
                self._batches.append(_MappedBatch(reader.get_batch(b), self.seq_len))
        sizes = np.array([len(b.n_tokens) for b in self._batches], dtype=np.int64)
        self._batch_starts = np.concatenate([[0], np.cumsum(sizes)])
        if self._batch_starts[-1] != self.manifest["splits"][split]["rows"]:
            raise ValueError(f"{self.uri}: the {split} shards hold {self._batch_starts[-1]} rows, "
                             f"manifest.json says {self.manifest['splits'][split]['rows']}")

    def __reduce__(self):
        # Pickled (to a Ray worker, a DataLoader process) as its arguments: the receiver maps the files
        # itself instead of receiving a copy of every row.
        return ShardReader, (self.uri, self.split, self.cache_dir)

    # -- where the files are -------------------------------------------------------------------------
    def _local_root(self, cache_dir, paths: list[str]) -> Path:
        if not storage.is_s3(self.uri):
            return Path(storage.filesystem(self.uri)[1])
        base = Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
        root = base / self.manifest_hash
        for rel in [shards.TOKENIZER_FILE, *paths]:
            target = root / rel
            if not target.exists():
                storage.write_bytes(str(target), storage.read_bytes(storage.join(self.uri, rel)))
        return root

    # -- rows ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._batch_starts[-1])

    def _locate(self, i: int) -> tuple[_MappedBatch, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range: the {self.split} split has {len(self)} rows")
        b = int(np.searchsorted(self._batch_starts, i, side="right")) - 1
        return self._batches[b], i - int(self._batch_starts[b])

    def __getitem__(self, i: int) -> np.ndarray:
        """Row `i` (seq_len uint16 ids), a read-only view of the mapped file: no copy."""
        batch, j = self._locate(int(i))
        return batch.input_ids[j]

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The rows at `indices`, gathered into a new (n, seq_len) uint16 array."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row indices must be in 0..{len(self) - 1}")
        out = np.empty((len(indices), self.seq_len), dtype=np.uint16)
        which = np.searchsorted(self._batch_starts, indices, side="right") - 1
        for b in np.unique(which):
            mask = which == b
            out[mask] = self._batches[b].input_ids[indices[mask] - self._batch_starts[b]]
        return out

    def n_tokens(self, i: int) -> int:
        """Ids before the padding; the loss ignores positions from here on."""
        batch, j = self._locate(int(i))
        return int(batch.n_tokens[j])

    def language(self, i: int) -> str:
        batch, j = self._locate(int(i))
        return batch.language_names[batch.language_codes[j]]

    def doc_starts(self, i: int) -> np.ndarray:
        """Offsets in the row where each document piece starts (the first may continue an earlier row's
        document: see `first_continues`); the tag occupies the offsets before the first."""
        batch, j = self._locate(int(i))
        return batch.start_values[batch.start_offsets[j]:batch.start_offsets[j + 1]]

    def doc_ids(self, i: int) -> list[str]:
        """The document of each piece, aligned with `doc_starts`: traces the row back to its files."""
        batch, j = self._locate(int(i))
        return batch.doc_ids[j].as_py()

    def first_continues(self, i: int) -> bool:
        batch, j = self._locate(int(i))
        return bool(batch.first_continues[j].as_py())

    def stream_row(self, i: int) -> int:
        """The row's index in its (split, language) stream before the shuffle: orders a long document's
        pieces."""
        batch, j = self._locate(int(i))
        return int(batch.stream_row[j])

    # -- distribution --------------------------------------------------------------------------------
    def rank_indices(self, rank: int, world_size: int, epoch: int, seed: int) -> np.ndarray:
        """The global rows rank `rank` of `world_size` reads in epoch `epoch`.

        All rows are permuted by a generator seeded with (seed, epoch), the same on every rank, and rank r
        takes every world_size-th row of that permutation from position r (a strided slice). Across the
        ranks every row is read exactly once per epoch; rank sizes differ by at most one row (a trainer
        that needs equal steps drops each rank's tail beyond `len(self) // world_size`)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        return order[rank::world_size]
