"""The lease on local storage: create-if-absent and compare-and-swap under a folder lock, so of writers racing
for an output exactly one wins; take-over of a dead writer's lease; a heartbeat that finds the lease taken
marks its writer as having lost it."""

from __future__ import annotations

import json
import threading
import time

import pytest

from codemill import lease as lease_module
from codemill.lease import EXPIRES_S, LEASE_FILE, Lease, LeaseHeld, LocalStore


def stale_record(token: str = "dead") -> dict:
    """A lease of a writer on another host that stopped heartbeating long ago."""
    return {"owner": "elsewhere pid 1 (stage crawl)", "host": "another-host", "pid": 1, "token": token,
            "what": "stage crawl", "heartbeat": time.time() - 2 * EXPIRES_S}


def test_of_writers_racing_for_one_output_exactly_one_wins(tmp_path):
    barrier = threading.Barrier(8)
    won, refused = [], []

    def contender(i: int) -> None:
        barrier.wait()
        try:
            won.append(Lease(str(tmp_path), f"writer {i}").acquire())
        except LeaseHeld as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(won) == 1 and len(refused) == 7
    assert all("is being written by" in r and f"({won[0].what})" in r for r in refused)
    assert json.loads((tmp_path / LEASE_FILE).read_text())["token"] == won[0].token
    won[0].release()
    assert not (tmp_path / LEASE_FILE).exists()


def test_create_is_refused_when_a_lease_exists_and_replace_when_it_moved_on(tmp_path):
    store = LocalStore(str(tmp_path / LEASE_FILE))
    first = store.create({"token": "a"})
    assert first is not None and store.create({"token": "b"}) is None
    second = store.replace({"token": "a", "beat": 2}, first)
    assert second is not None and second != first
    assert store.replace({"token": "c"}, first) is None  # a stale version: someone wrote since
    store.delete(first)  # not the current version: kept
    assert store.read()[0] == {"token": "a", "beat": 2}
    store.delete(second)
    assert store.read() is None


def test_a_dead_writers_lease_is_taken_over_and_a_torn_file_too(tmp_path, caplog):
    (tmp_path / LEASE_FILE).write_text(json.dumps(stale_record()))
    with Lease(str(tmp_path), "stage crawl") as held:
        assert json.loads((tmp_path / LEASE_FILE).read_text())["token"] == held.token
    assert "taking over the lease of elsewhere pid 1" in caplog.text
    (tmp_path / LEASE_FILE).write_text('{"owner": "tor')  # a writer died mid-write on a store without renames
    with Lease(str(tmp_path), "stage crawl") as held:
        assert json.loads((tmp_path / LEASE_FILE).read_text())["token"] == held.token


def test_a_live_writers_lease_is_refused_with_its_owner(tmp_path):
    with Lease(str(tmp_path), "dag run of d.yaml"):
        with pytest.raises(LeaseHeld, match=r"is being written by .* \(dag run of d.yaml\) \(heartbeat 0 s ago\)"):
            Lease(str(tmp_path), "stage filter").acquire()


def test_a_heartbeat_refused_because_another_writer_took_over_marks_the_lease_lost(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.05)
    held = Lease(str(tmp_path), "stage crawl").acquire()
    # Another writer decided this one was dead (it had stopped heartbeating) and replaced its lease.
    store = LocalStore(str(tmp_path / LEASE_FILE))
    record, version = store.read()
    assert store.replace({**stale_record("taker"), "owner": "taker-host pid 7", "heartbeat": time.time()}, version)
    held._thread.join(timeout=10)
    assert held.lost and "lost its lease, now held by taker-host pid 7" in caplog.text
    held.release()  # a lost lease is not deleted: it is the taker's now
    assert store.read()[0]["token"] == "taker"


def test_heartbeats_move_the_lease_forward(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.02)
    with Lease(str(tmp_path), "stage crawl") as held:
        first = json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat"]
        deadline = time.time() + 10
        while json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.01)
        assert json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat"] > first and not held.lost
