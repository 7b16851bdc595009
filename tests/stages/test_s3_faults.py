"""Storage against an S3 server that fails some requests: a fault-injecting proxy in front of moto."""

from __future__ import annotations

import pyarrow as pa
import pytest
from s3_proxy import FaultyProxy

from codemill import manifest as mf
from codemill import storage
from codemill.config import StrictModel
from codemill.runner import run_stage


class Demo(StrictModel):
    rows: int = 1000


def _write_rows(run):
    table = pa.table({"x": list(range(run.config.rows))})
    for i in range(5):
        storage.write_table(table, run.path("data", f"part-{i}.parquet"))
    return {"rows": 5 * run.config.rows}


def test_a_stage_on_s3_survives_throttling(s3_server, s3_bucket, monkeypatch):
    with FaultyProxy(s3_server, fail_every=3) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        out = f"{s3_bucket}/run/demo"
        manifest = run_stage("demo", Demo(), out, _write_rows)
        assert manifest.status == "complete"
        assert storage.read_table(storage.join(out, "data")).num_rows == 5000
        assert mf.read_manifest(out).counts == {"rows": 5000}
        assert proxy.failed >= 5, "the proxy should have failed some requests"


def test_a_store_that_refuses_everything_fails_clearly_and_leaves_no_manifest(s3_server, s3_bucket, monkeypatch):
    out = f"{s3_bucket}/run/demo"
    with FaultyProxy(s3_server, fail_every=1) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("CODEMILL_S3_MAX_ATTEMPTS", "3")  # the default (10) waits minutes before giving up
        with pytest.raises(OSError, match="SlowDown|503|reduce your request rate"):
            run_stage("demo", Demo(), out, _write_rows)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    assert mf.read_manifest(out) is None
