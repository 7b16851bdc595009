"""One writer per output: a lease file with its owner and a heartbeat, on local storage and S3 alike.

A second writer is refused with who holds the lease. A lease whose owner stopped heartbeating (killed,
OOM, lost node) for `EXPIRES_S` is taken over; on the owner's own host a dead process is seen at once.
Object stores have no atomic create-if-absent here, so a writer checks, writes, then reads back after a
short wait: of two writers racing within that window, the one whose lease is read back wins.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import uuid
from dataclasses import dataclass, field

from codemill import storage

log = logging.getLogger("codemill")

LEASE_FILE = "_lease.json"
HEARTBEAT_S = 10.0
EXPIRES_S = 60.0
SETTLE_S = 0.5  # how long a writer waits before reading its lease back


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


@dataclass
class Lease:
    folder: str
    what: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return storage.join(self.folder, LEASE_FILE)

    def _record(self) -> dict:
        return {"owner": f"{platform.node()} pid {os.getpid()} ({self.what})", "host": platform.node(),
                "pid": os.getpid(), "token": self.token, "what": self.what, "heartbeat": time.time()}

    def _read(self) -> dict | None:
        try:
            data = storage.read_json(self.uri)
        except FileNotFoundError:
            return None
        except ValueError:  # a torn or foreign file: nobody's lease
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> Lease:
        held = self._read()
        if held and held.get("token") != self.token and holder_is_alive(held):
            raise LeaseHeld(_held_message(self.folder, held))
        if held:
            log.warning("%s: taking over the lease of %s, which stopped heartbeating", self.folder, held.get("owner"))
        storage.write_json(self.uri, self._record())
        time.sleep(SETTLE_S)
        held = self._read()
        if not held or held.get("token") != self.token:
            raise LeaseHeld(_held_message(self.folder, held or {"owner": "another writer"}))
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.folder}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                storage.write_json(self.uri, self._record())
            except OSError as exc:  # storage hiccup: the next beat tries again, well within EXPIRES_S
                log.warning("lease heartbeat for %s failed: %s", self.folder, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        held = self._read()
        if held and held.get("token") == self.token:
            storage.delete_file(self.uri)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _held_message(folder: str, held: dict) -> str:
    beat = f" (heartbeat {time.time() - float(held['heartbeat']):.0f} s ago)" if held.get("heartbeat") else ""
    return (f"{folder} is being written by {held.get('owner', 'another writer')}{beat}: "
            f"wait for it to finish or stop it; a writer that stops heartbeating for {EXPIRES_S:.0f} s is "
            f"taken over")
