"""A proxy in front of the test S3 server (moto) that fails some requests or drops some headers."""

from __future__ import annotations

import http.client
import http.server
import threading
from urllib.parse import urlsplit

from loopback_http import LoopbackHTTPServer


class FaultyProxy(LoopbackHTTPServer):
    """Forwards every request to `upstream`, except that every `fail_every`-th one is answered 503 SlowDown
    (what S3 says when it throttles), or all of them when `fail_every` is 1 (none when 0). Request headers
    named in `drop_headers` are not forwarded: a server that ignores them, as one without conditional writes
    ignores If-None-Match."""

    def __init__(self, upstream: str, fail_every: int = 0, drop_headers: tuple[str, ...] = ()):
        target = urlsplit(upstream)
        dropped = tuple(h.lower() for h in drop_headers)
        self.dropped_headers: list[str] = []  # the names of the headers not forwarded, one per request
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
                    fail = fail_every > 0 and n % fail_every == 0
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
                           if k.lower() not in ("host", "transfer-encoding", "content-length", "expect", *dropped)}
                with lock:
                    proxy.dropped_headers += [k for k in self.headers if k.lower() in dropped]
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
