"""One writer per output: a lease file with its owner and a heartbeat, on local storage and S3 alike.

A second writer is refused with who holds the lease. A lease whose owner stopped heartbeating (killed,
OOM, lost node) for `EXPIRES_S` is taken over; on the owner's own host a dead process is seen at once.

Every change is a compare-and-swap on the lease's version, so of two writers racing for it exactly one wins:
- S3: conditional writes. Creating is a PUT with `If-None-Match: *` (refused when the object exists);
  a heartbeat or a take-over is a PUT with `If-Match: <the ETag read>` (refused when someone else wrote it
  since). A holder whose heartbeat is refused has lost the lease and says so.
- Local storage: creating is a hard link of a finished temp file (refused when the name exists); replacing
  compares the file's bytes under an advisory lock (`fcntl.flock`) beside it.
- An S3-compatible server that ignores or refuses conditional headers (probed once per bucket) gets the old
  emulation, with a warning: write, wait `SETTLE_S`, read back; of two writers racing within that window,
  the one whose lease is read back wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from codemill import storage

log = logging.getLogger("codemill")

LEASE_FILE = "_lease.json"
HEARTBEAT_S = 10.0
EXPIRES_S = 60.0
SETTLE_S = 0.5  # emulation only: how long a writer waits before reading its lease back
ACQUIRE_ROUNDS = 3  # create / take over, then look again when another writer got there first


class LeaseHeld(RuntimeError):
    """Another live writer holds the output."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_is_alive(record: dict, now: float | None = None) -> bool:
    """Whether the writer of a lease record may still be writing."""
    now = time.time() if now is None else now
    if record.get("host") == platform.node() and isinstance(record.get("pid"), int):
        if not _process_alive(record["pid"]):
            return False
    return now - float(record.get("heartbeat", 0)) < EXPIRES_S


def _encode(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def _decode(data: bytes) -> dict:
    """A torn or foreign file is nobody's lease: an empty record, which no heartbeat keeps alive."""
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


class LeaseStore(Protocol):
    """Versioned storage of one lease file; every write is conditional on what the writer last saw."""

    def read(self) -> tuple[dict, str] | None:
        """(record, version), or None when there is no lease."""

    def create(self, record: dict) -> str | None:
        """Write the lease if none exists: its version, or None when one does."""

    def replace(self, record: dict, version: str) -> str | None:
        """Overwrite the lease if it is still at `version`: the new version, or None when it moved on."""

    def delete(self, version: str) -> None:
        """Remove the lease if it is still at `version`."""


class LocalStore:
    """Every change is made under an advisory lock on the lease's folder (`flock`, released by the kernel
    when its holder dies; held for one read and one rename), so check-then-write is atomic between writers;
    readers need no lock, since a write is a rename."""

    def __init__(self, path: str):
        self.path = path

    def read(self) -> tuple[dict, str] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return _decode(data), hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, record: dict) -> str:
        data = _encode(record)
        storage.write_bytes(self.path, data)
        return hashlib.sha256(data).hexdigest()

    def create(self, record: dict) -> str | None:
        with self._locked():
            return None if os.path.exists(self.path) else self._write(record)

    def replace(self, record: dict, version: str) -> str | None:
        with self._locked():
            current = self.read()
            return self._write(record) if current is not None and current[1] == version else None

    def delete(self, version: str) -> None:
        with self._locked():
            current = self.read()
            if current is not None and current[1] == version:
                os.remove(self.path)


def _s3_client():
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=storage.s3_endpoint(), region_name=region,
                        config=Config(retries={"mode": "standard", "max_attempts": int(
                            os.environ.get("CODEMILL_S3_MAX_ATTEMPTS") or storage.S3_MAX_ATTEMPTS)}))


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len(storage.S3_SCHEME):].partition("/")
    return bucket, key


def _refused(exc: Exception) -> bool:
    """A conditional request the server refused: the precondition failed (412), a concurrent conditional
    write won (409), or the object an If-Match named is gone (NoSuchKey)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (409, 412)


@contextlib.contextmanager
def _s3_errors(what: str):
    """boto3's errors as OSError, what storage (pyarrow) raises for S3 failures too."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise OSError(f"lease: {what} on {storage.s3_endpoint() or 'AWS S3'} failed: {exc}") from exc


class S3ConditionalStore:
    """Versions are ETags; creation and replacement are PUTs with If-None-Match / If-Match."""

    def __init__(self, uri: str, client=None):
        self.bucket, self.key = _bucket_key(uri)
        self.client = client or _s3_client()

    def read(self) -> tuple[dict, str] | None:
        from botocore.exceptions import ClientError

        with _s3_errors(f"GET s3://{self.bucket}/{self.key}"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            return _decode(answer["Body"].read()), answer["ETag"]

    def _put(self, record: dict, **condition) -> str | None:
        with _s3_errors(f"PUT s3://{self.bucket}/{self.key}"):
            try:
                return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=_encode(record),
                                              ContentType="application/json", **condition)["ETag"]
            except Exception as exc:
                if _refused(exc):
                    return None
                raise

    def create(self, record: dict) -> str | None:
        return self._put(record, IfNoneMatch="*")

    def replace(self, record: dict, version: str) -> str | None:
        return self._put(record, IfMatch=version)

    def delete(self, version: str) -> None:
        current = self.read()
        if current is not None and current[1] == version:
            with _s3_errors(f"DELETE s3://{self.bucket}/{self.key}"):
                self.client.delete_object(Bucket=self.bucket, Key=self.key)


class EmulatedStore:
    """For a server without conditional writes: check, write, wait, read back. The version is the record's
    token and heartbeat, which every write changes."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _version(record: dict) -> str:
        return f"{record.get('token')}@{record.get('heartbeat')}"

    def read(self) -> tuple[dict, str] | None:
        try:
            record = _decode(storage.read_bytes(self.uri))
        except FileNotFoundError:
            return None
        return record, self._version(record)

    def _write_and_check(self, record: dict) -> str | None:
        storage.write_bytes(self.uri, _encode(record))
        time.sleep(SETTLE_S)
        back = self.read()
        return back[1] if back is not None and back[0].get("token") == record.get("token") else None

    def create(self, record: dict) -> str | None:
        return None if self.read() is not None else self._write_and_check(record)

    def replace(self, record: dict, version: str) -> str | None:
        current = self.read()
        if current is None or current[1] != version:
            return None
        if current[0].get("token") == record.get("token"):  # our own heartbeat: no race to settle
            storage.write_bytes(self.uri, _encode(record))
            return self._version(record)
        return self._write_and_check(record)

    def delete(self, version: str) -> None:
        current = self.read()
        if current is not None and current[1] == version:
            storage.delete_file(self.uri)


_CONDITIONAL_WRITES: dict[tuple[str | None, str], bool] = {}


def s3_supports_conditional_writes(endpoint: str | None, bucket: str, folder_key: str) -> bool:
    """Whether the server honours `If-None-Match: *` on PutObject, probed once per endpoint and bucket (in
    `folder_key`, where the lease goes): a scratch object is written, then written again conditionally, which
    must be refused. A server that ignores the header (the second write succeeds) or rejects it (an error)
    does not support it."""
    if (endpoint, bucket) not in _CONDITIONAL_WRITES:
        _CONDITIONAL_WRITES[(endpoint, bucket)] = _probe(endpoint, bucket, folder_key)
    return _CONDITIONAL_WRITES[(endpoint, bucket)]


def _probe(endpoint: str | None, bucket: str, folder_key: str) -> bool:
    client = _s3_client()
    probe = f"{folder_key.rstrip('/')}/_lease.probe-{uuid.uuid4().hex[:12]}".lstrip("/")
    where = f"{endpoint or 'AWS S3'} (bucket {bucket})"
    try:
        with _s3_errors(f"PUT s3://{bucket}/{probe} (probing for conditional writes)"):
            client.put_object(Bucket=bucket, Key=probe, Body=b"probe")
        try:
            client.put_object(Bucket=bucket, Key=probe, Body=b"probe again", IfNoneMatch="*")
        except Exception as exc:
            if _refused(exc):
                return True
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status not in (400, 501):  # a throttle or a network error says nothing about support: raise
                with _s3_errors("PUT with If-None-Match (probing for conditional writes)"):
                    raise
            log.warning("lease: %s refused a conditional write (%s); falling back to the emulated lease "
                        "(write, wait %.1f s, read back), which two writers starting within that window can both "
                        "pass", where, exc, SETTLE_S)
            return False
        log.warning("lease: %s ignores If-None-Match on PutObject; falling back to the emulated lease (write, "
                    "wait %.1f s, read back), which two writers starting within that window can both pass",
                    where, SETTLE_S)
        return False
    finally:
        with contextlib.suppress(Exception):
            client.delete_object(Bucket=bucket, Key=probe)


def lease_store(uri: str) -> LeaseStore:
    if not storage.is_s3(uri):
        return LocalStore(storage.absolute(uri))
    bucket, key = _bucket_key(uri)
    folder = key.rpartition("/")[0]
    if s3_supports_conditional_writes(storage.s3_endpoint(), bucket, folder):
        return S3ConditionalStore(uri)
    return EmulatedStore(uri)


@dataclass
class Lease:
    folder: str
    what: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    lost: bool = False  # a heartbeat was refused: another writer took the lease over
    _store: LeaseStore | None = None
    _version: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return storage.join(self.folder, LEASE_FILE)

    def _record(self) -> dict:
        return {"owner": f"{platform.node()} pid {os.getpid()} ({self.what})", "host": platform.node(),
                "pid": os.getpid(), "token": self.token, "what": self.what, "heartbeat": time.time()}

    def acquire(self) -> Lease:
        self._store = store = lease_store(self.uri)
        held: dict | None = None
        for _ in range(ACQUIRE_ROUNDS):
            current = store.read()
            if current is None:
                self._version = store.create(self._record())
            else:
                held, version = current
                if held.get("token") != self.token and holder_is_alive(held):
                    raise LeaseHeld(_held_message(self.folder, held))
                log.warning("%s: taking over the lease of %s, which stopped heartbeating", self.folder,
                            held.get("owner", "an unreadable lease file"))
                self._version = store.replace(self._record(), version)
            if self._version is not None:
                break
        else:  # another writer won every race
            current = store.read()
            raise LeaseHeld(_held_message(self.folder, current[0] if current else {"owner": "another writer"}))
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.folder}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                version = self._store.replace(self._record(), self._version)
            except OSError as exc:  # storage hiccup: the next beat tries again, well within EXPIRES_S
                log.warning("lease heartbeat for %s failed: %s", self.folder, exc)
                continue
            if version is None:
                current = self._store.read()
                owner = current[0].get("owner", "another writer") if current else "nobody (it was deleted)"
                log.error("%s: this writer lost its lease, now held by %s (no heartbeat for %.0f s?); it should "
                          "stop writing", self.folder, owner, EXPIRES_S)
                self.lost = True
                return
            self._version = version

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        if self._store is not None and self._version is not None and not self.lost:
            self._store.delete(self._version)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _held_message(folder: str, held: dict) -> str:
    beat = f" (heartbeat {time.time() - float(held['heartbeat']):.0f} s ago)" if held.get("heartbeat") else ""
    return (f"{folder} is being written by {held.get('owner', 'another writer')}{beat}: "
            f"wait for it to finish or stop it; a writer that stops heartbeating for {EXPIRES_S:.0f} s is "
            f"taken over")
