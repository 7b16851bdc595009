"""A stand-in OpenAI-style completions server on loopback for the eval tests: POST /v1/completions answers
every prompt of a batch with `answer(prompt, sample_index)`, n times; records each request body. `failures`:
(status, Retry-After or None[, OpenAI error object]) answers given, in order, before any completion (a busy or
restarting server, a refusal). It has no other route (no GET /tokenizer_info: a server that does not say its
context)."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from loopback_http import LoopbackHTTPServer


class FakeCompletions(LoopbackHTTPServer):
    def __init__(self, answer: Callable[[str, int], str], key: str | None = None,
                 failures: list[tuple] | None = None):
        self.requests: list[dict] = []
        self.prompts: list[str] = []
        self.failures = list(failures or [])
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/completions" or (key and self.headers.get("Authorization") != f"Bearer {key}"):
                    self.send_response(401)
                    self.end_headers()
                    return
                outer.attempts += 1
                if outer.failures:
                    status, retry_after, *error = outer.failures.pop(0)
                    data = json.dumps({"error": error[0]}).encode() if error else b""
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                outer.requests.append(body)
                choices = []
                for i, prompt in enumerate(body["prompt"]):
                    outer.prompts.append(prompt)
                    choices += [{"index": i * body["n"] + j, "text": answer(prompt, j), "finish_reason": "stop"}
                                for j in range(body["n"])]
                data = json.dumps({"choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)
