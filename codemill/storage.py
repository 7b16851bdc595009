"""Storage URIs: a local path or `s3://bucket/prefix`, all through `pyarrow.fs`.

S3 endpoint, region and credentials come from the standard AWS settings (environment, profile), so a
custom endpoint (MinIO, moto, Ceph) works by setting `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`).
Writes are atomic: a local file is written beside its target and renamed; an S3 PUT is atomic by itself.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

S3_SCHEME = "s3://"
PARQUET_COMPRESSION = "zstd"
# Object stores throttle and drop requests under load (503 SlowDown, resets): retried with backoff, this often
# (CODEMILL_S3_MAX_ATTEMPTS overrides it).
S3_MAX_ATTEMPTS = 10


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEME)


def join(uri: str, *parts: str) -> str:
    uri = str(uri)
    if is_s3(uri):
        return S3_SCHEME + posixpath.join(uri[len(S3_SCHEME):].rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def absolute(uri: str) -> str:
    """A local path made absolute (Ray workers run in other folders); an S3 URI unchanged."""
    return str(uri) if is_s3(uri) else str(Path(uri).expanduser().absolute())


def parent(uri: str) -> tuple[str, str]:
    """(the folder that holds `uri`, its name); ("", "") at a root."""
    uri = str(uri).rstrip("/")
    if is_s3(uri):
        head, _, name = uri[len(S3_SCHEME):].rpartition("/")
        return (S3_SCHEME + head, name) if head else ("", "")
    head, name = os.path.split(uri)
    return (head, name) if name and head != uri else ("", "")


def is_within(uri: str, root: str) -> bool:
    """Whether `uri` is `root` or lies under it (after making local paths absolute and normalised)."""
    if is_s3(uri) != is_s3(root):
        return False
    if is_s3(uri):
        a, b = posixpath.normpath(uri[len(S3_SCHEME):]), posixpath.normpath(root[len(S3_SCHEME):])
        return a == b or a.startswith(b.rstrip("/") + "/")
    a, b = os.path.realpath(absolute(uri)), os.path.realpath(absolute(root))
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None, attempts: int) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for `uri` and the path inside it."""
    uri = str(uri)
    if is_s3(uri):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        attempts = int(os.environ.get("CODEMILL_S3_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS)
        return _s3_filesystem(s3_endpoint(), region, attempts), uri[len(S3_SCHEME):].rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write `data` so that readers see either the old object or the whole new one, never a part."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path) if is_s3(uri) else os.path.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    if is_s3(uri):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Files under `uri` (recursive) ending with `suffix`, as URIs of the same kind, sorted."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    found = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))
    return [S3_SCHEME + p if is_s3(uri) else p for p in found]


def list_names(uri: str) -> list[str]:
    """The names directly under `uri` (files and folders), sorted; [] when it does not exist."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def delete(uri: str) -> None:
    """Remove a file or a folder (with everything in it); nothing when there is none."""
    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind != pafs.FileType.NotFound:
        fs.delete_file(path)


def delete_dir(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def delete_file(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)


def write_table(table: pa.Table, uri: str) -> None:
    """One Parquet file (zstd), atomically."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    write_bytes(uri, sink.getvalue().to_pybytes())


def read_table(uri: str, columns: list[str] | None = None, schema: pa.Schema | None = None,
               filter: pc.Expression | None = None) -> pa.Table:
    """All Parquet files under `uri` (a file or a folder) as one table. A folder with none is an error,
    unless `schema` is given: then it is an empty table of that schema. `filter`: only the rows it keeps
    (applied batch by batch while reading, so the unfiltered rows are never held at once)."""
    files = [uri] if uri.endswith(".parquet") else list_files(uri, ".parquet")
    if not files:
        if schema is not None:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        raise FileNotFoundError(f"no Parquet files under {uri}")
    fs, _ = filesystem(uri)
    tables = [pq.read_table(filesystem(f)[1], filesystem=fs, columns=columns, filters=filter) for f in files]
    return pa.concat_tables(tables, promote_options="default")


def iter_parquet_batches(uri: str, columns: list[str] | None = None,
                         batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
    fs, _ = filesystem(uri)
    for f in list_files(uri, ".parquet"):
        with fs.open_input_file(filesystem(f)[1]) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size, columns=columns)
