"""Storage against an S3 server that fails some requests: a fault-injecting proxy in front of moto."""

from __future__ import annotations

import http.client
import http.server
import threading
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from loopback_http import LoopbackHTTPServer

from codemill import manifest as mf
from codemill import storage
from codemill.config import StrictModel
from codemill.runner import run_stage


class FaultyProxy(LoopbackHTTPServer):
    """Forwards every request to `upstream`, except that every `fail_every`-th one is answered 503 SlowDown
    (what S3 says when it throttles), or all of them when `fail_every` is 1."""

    def __init__(self, upstream: str, fail_every: int):
        target = urlsplit(upstream)
        self.failed = 0
        self.forwarded = 0
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                with lock:
                    n = proxy.failed + proxy.forwarded + 1
                    fail = fail_every == 1 or n % fail_every == 0
                    if fail:
                        proxy.failed += 1
                    else:
                        proxy.forwarded += 1
                if fail:
                    payload = (b'<?xml version="1.0"?><Error><Code>SlowDown</Code>'
                               b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "transfer-encoding", "content-length", "expect")}
                headers["Host"] = f"{target.hostname}:{target.port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                # A HEAD answer has no body but says how long the object is.
                length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        super().__init__(Handler)


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
