"""Generation from an endpoint through codemill's one retry helper: a busy server (503, 429 with Retry-After)
is asked again and its answer used; a request the server refuses (4xx) fails at once with the server's word;
a server that stays down fails after the configured attempts, saying so."""

from __future__ import annotations

import time

import pytest
from fake_completions import FakeCompletions

from codemill.eval.generate import GenerationError, HTTPGenerator


def test_busy_server_is_retried_honouring_retry_after():
    with FakeCompletions(lambda prompt, i: f" return {i}", failures=[(503, None), (429, "1")]) as server:
        gen = HTTPGenerator(server.url, max_retries=3, concurrency=1)
        started = time.monotonic()
        texts = gen.generate(["def f():\n"], 2, 0.8, 0.95, 8, [["\n"]])
        waited = time.monotonic() - started
    assert texts == [[" return 0", " return 1"]]
    assert server.attempts == 3 and waited >= 1.0, "the 429's Retry-After: 1 must be waited out"


def test_refused_request_fails_at_once_with_the_servers_word():
    with FakeCompletions(lambda prompt, i: "", failures=[(400, None)]) as server:
        gen = HTTPGenerator(server.url, max_retries=3, concurrency=1)
        with pytest.raises(GenerationError, match="HTTP 400"):
            gen.generate(["x"], 1, 0.0, 1.0, 4, [[]])
    assert server.attempts == 1


def test_a_server_that_stays_down_fails_after_the_attempts():
    with FakeCompletions(lambda prompt, i: "", failures=[(503, "0")] * 5) as server:
        gen = HTTPGenerator(server.url, max_retries=2, concurrency=1)
        with pytest.raises(GenerationError, match="HTTP 503"):
            gen.generate(["x"], 1, 0.0, 1.0, 4, [[]])
    assert server.attempts == 3


def test_a_prompt_past_the_context_of_a_server_that_does_not_say_its_context_fails_saying_what_to_do():
    refusal = {"message": "this model's context is 2048 tokens", "code": "context_length_exceeded"}
    with FakeCompletions(lambda prompt, i: "", failures=[(400, None, refusal)]) as server:
        gen = HTTPGenerator(server.url, max_retries=0, concurrency=1)
        with pytest.raises(GenerationError, match="(?s)does not say its context .* lower the generation's max_tokens"):
            gen.generate(["x"], 1, 0.0, 1.0, 4, [[]])
    assert server.attempts == 1 and gen.context is None
