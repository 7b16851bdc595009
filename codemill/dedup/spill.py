"""The dedup stage's intermediate state on its own storage (a local folder or S3), not in any process.

A spilled table is split into groups by an integer key: one folder per group, one Parquet file per
writer. Many writers can fill the same group without coordination, and a task reads exactly one group.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codemill import storage
from codemill.hashing import mix64


def group_uri(root: str, key: int) -> str:
    return storage.join(root, f"{int(key):016x}")


def write_groups(table: pa.Table, keys: np.ndarray, root: str, writer: str) -> None:
    """Rows of `table` into the group of their key; `writer` names this writer's file in each group
    (a retried task overwrites its own files)."""
    if table.num_rows == 0:
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    table = table.take(order)
    groups, starts = np.unique(sorted_keys, return_index=True)
    ends = np.append(starts[1:], len(sorted_keys))
    for key, start, end in zip(groups.tolist(), starts.tolist(), ends.tolist()):
        _write(table.slice(start, end - start), storage.join(group_uri(root, key), f"{writer}.parquet"))


def _write(table: pa.Table, uri: str) -> None:
    """Unlike storage.write_table, without fsync or rename: spilled state is scratch that lives only while
    the stage runs (a step reads a group only after every writer of it has finished), and thousands of
    small files each flushed to disk would cost more than the work they hold."""
    fs, path = storage.filesystem(uri)
    fs.create_dir(storage.parent(path)[0], recursive=True)
    with fs.open_output_stream(path) as sink:
        pq.write_table(table, sink, compression=storage.PARQUET_COMPRESSION)


def read_group(root: str, key: int, schema: pa.Schema, columns: list[str] | None = None,
               filter: pc.Expression | None = None) -> pa.Table:
    """Every writer's rows of one group (an empty table of `schema` when none wrote to it); with `filter`,
    only the rows it keeps."""
    table = storage.read_table(group_uri(root, key), columns=columns, schema=schema, filter=filter)
    return table.cast(schema if columns is None else pa.schema([schema.field(c) for c in columns]))


def hash_partition(values: np.ndarray, n_partitions: int) -> np.ndarray:
    """A partition for each int64 value; values are mixed first, so structured ids (locators) spread."""
    with np.errstate(over="ignore"):
        return (mix64(values.astype(np.uint64)) % np.uint64(n_partitions)).astype(np.int64)
