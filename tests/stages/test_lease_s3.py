"""The lease on S3 by conditional writes, against the real moto server: moto honours `If-None-Match: *` and
`If-Match` on PutObject (probed, not assumed), racing writers leave exactly one holder, a take-over of a dead
writer's lease is a compare-and-swap on its ETag; a server that ignores the headers (a proxy drops them) is
detected, and the lease falls back to the emulation, loudly."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from s3_proxy import FaultyProxy

from codemill import lease as lease_module
from codemill import storage
from codemill.lease import EXPIRES_S, LEASE_FILE, EmulatedStore, Lease, LeaseHeld, S3ConditionalStore, lease_store


@pytest.fixture(autouse=True)
def fresh_probe_cache(monkeypatch):
    monkeypatch.setattr(lease_module, "_CONDITIONAL_WRITES", {})


def race(folder: str, writers: int = 6) -> tuple[list[Lease], list[str]]:
    barrier = threading.Barrier(writers)
    won, refused = [], []

    def contender(i: int) -> None:
        barrier.wait()
        try:
            won.append(Lease(folder, f"writer {i}").acquire())
        except LeaseHeld as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return won, refused


def test_moto_honours_conditional_writes_and_racing_writers_leave_one_holder(s3_server, s3_bucket, caplog):
    folder = f"{s3_bucket}/run/crawl"
    assert isinstance(lease_store(storage.join(folder, LEASE_FILE)), S3ConditionalStore)
    assert "falling back" not in caplog.text
    won, refused = race(folder)
    assert len(won) == 1 and len(refused) == 5, refused
    assert storage.read_json(storage.join(folder, LEASE_FILE))["token"] == won[0].token
    won[0].release()
    assert not storage.exists(storage.join(folder, LEASE_FILE))
    # The probe leaves nothing behind.
    listed = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket[len("s3://"):])
    assert listed.get("KeyCount", 0) == 0, listed.get("Contents")


def test_a_take_over_is_a_compare_and_swap_on_the_etag(s3_bucket):
    uri = f"{s3_bucket}/run/crawl/{LEASE_FILE}"
    store = S3ConditionalStore(uri)
    dead = {"owner": "elsewhere pid 1", "host": "another-host", "pid": 1, "token": "dead",
            "heartbeat": time.time() - 2 * EXPIRES_S}
    etag = store.create(dead)
    assert etag and store.create({"token": "x"}) is None
    # Two writers read the same dead lease; the first replace wins, the second's If-Match no longer holds.
    assert store.replace({"token": "first"}, etag) is not None
    assert store.replace({"token": "second"}, etag) is None
    assert store.read()[0] == {"token": "first"}


def test_a_heartbeat_refused_after_a_take_over_marks_the_lease_lost(s3_bucket, monkeypatch, caplog):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.1)
    folder = f"{s3_bucket}/run/filter"
    held = Lease(folder, "stage filter").acquire()
    store = S3ConditionalStore(storage.join(folder, LEASE_FILE))
    _, etag = store.read()
    assert store.replace({"owner": "taker pid 9", "token": "taker", "heartbeat": time.time()}, etag)
    held._thread.join(timeout=30)
    assert held.lost and "lost its lease, now held by taker pid 9" in caplog.text
    held.release()
    assert store.read()[0]["token"] == "taker"


def test_a_server_without_conditional_writes_gets_the_emulated_lease_loudly(s3_server, s3_bucket, monkeypatch,
                                                                              caplog):
    with FaultyProxy(s3_server, drop_headers=("If-None-Match", "If-Match")) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        folder = f"{s3_bucket}/run/dedup"
        assert isinstance(lease_store(storage.join(folder, LEASE_FILE)), EmulatedStore)
        assert "If-None-Match" in proxy.dropped_headers
        assert f"{proxy.url} (bucket {s3_bucket[5:]}) ignores If-None-Match on PutObject; falling back to the " \
               f"emulated lease" in caplog.text
        with Lease(folder, "stage dedup") as held:
            with pytest.raises(LeaseHeld, match=r"\(stage dedup\)"):
                Lease(folder, "stage dedup again").acquire()
            assert json.loads(storage.read_bytes(storage.join(folder, LEASE_FILE)))["token"] == held.token
        assert not storage.exists(storage.join(folder, LEASE_FILE))
