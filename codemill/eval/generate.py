"""Generation behind one small interface, so the stage does not care where completions come from:

- `HTTPGenerator`: any OpenAI-compatible `/v1/completions` endpoint (codemill's serve stage included);
- `EngineGenerator`: codemill's serve engine in this process (continuous batching over all prompts at once);
  the stage runs one per GPU as Ray actors.

Both return, for each prompt, n completion texts (the text after the prompt, stop strings excluded).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Protocol

from codemill.eval.stall import DEFAULT_STALL_S, Stalled, StallWatch
from codemill.retry import Backoff, retry, transient_http_error

log = logging.getLogger("codemill.eval")

MAX_STOP_STRINGS = 4  # OpenAI's limit; the language adapters put the most useful stop strings first


class GenerationError(RuntimeError):
    pass


class Generator(Protocol):
    def generate(self, prompts: list[str], n: int | list[int], temperature: float, top_p: float,
                 max_tokens: int | list[int], stop: list[list[str]] | list[str]) -> list[list[str]]:
        """n completions for each prompt; `n` and `max_tokens` are one value for all prompts or one per prompt
        (MTPB's turns differ in both), `stop` is one list for all prompts or one list per prompt."""
        ...


def stops_for(stop: list[list[str]] | list[str], count: int) -> list[list[str]]:
    """One list of stop strings per prompt, from one list for all or one list per prompt."""
    if stop and isinstance(stop[0], list):
        if len(stop) != count:
            raise ValueError(f"{len(stop)} lists of stop strings for {count} prompts: give one list per prompt, "
                             f"or one flat list for all")
        return [list(s) for s in stop]  # type: ignore[arg-type]
    return [list(stop)] * count  # type: ignore[list-item]


def per_prompt(value: int | list[int], count: int) -> list[int]:
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f"{len(value)} values for {count} prompts")
        return list(value)
    return [value] * count


def _chunks(n: int, size: int) -> list[int]:
    return [min(size, n - i) for i in range(0, n, size)]


# A server that is busy or restarting is asked again after 0.5, 1, 2, ... s (jittered, at most 30 s), or after
# the Retry-After it sent.
RETRY_BACKOFF = Backoff(base_s=0.5, max_s=30.0)


def _transient(exc: BaseException) -> str | None:
    """Retry 429, 5xx, dropped connections and timeouts (codemill.retry), and a reply cut short (not JSON)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"the reply is not JSON ({exc})"
    return transient_http_error(exc)


class ServerRefused(GenerationError):
    """The server answered with an HTTP error; `code` is OpenAI's error code where the body gave one."""

    def __init__(self, message: str, status: int, code: str | None):
        super().__init__(message)
        self.status, self.code = status, code


class HTTPGenerator:
    """POST {endpoint}/v1/completions, a few requests in flight, retried with backoff on errors.

    A prompt too long for the model's context with its max_tokens keeps its last tokens, as with the in-process
    engine: after the server's first `context_length_exceeded`, the generator asks its context (vLLM's
    `GET /tokenizer_info`) and sends `truncate_prompt_tokens` with every request."""

    def __init__(self, endpoint: str, model: str = "codemill", api_key_env: str | None = None,
                 batch_size: int = 8, concurrency: int = 4, timeout_s: float = 600.0, max_retries: int = 3,
                 n_per_request: int = 20, seed: int = 0):
        base = endpoint.rstrip("/")
        self.url = base + ("/completions" if base.endswith("/v1") else "/v1/completions")
        self.root = base[:-len("/v1")] if base.endswith("/v1") else base
        self.context: int | None = None  # the model's context, once a refusal made it needed
        self.model, self.batch_size, self.concurrency = model, batch_size, concurrency
        self.timeout_s, self.max_retries, self.n_per_request, self.seed = timeout_s, max_retries, n_per_request, seed
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise GenerationError(f"--api-key-env {api_key_env}: that environment variable is not set")

    def _json(self, url: str, body: dict | None = None) -> dict:
        """The server's JSON answer to a POST of `body` (a GET without one), retried on transient errors."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        method = "POST" if body is not None else "GET"

        def once() -> dict:
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())

        try:
            return retry(once, what=f"{method} {url}", retry_on=_transient, attempts=self.max_retries + 1,
                         backoff=RETRY_BACKOFF)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            try:
                code = (json.loads(detail).get("error") or {}).get("code")
            except (ValueError, AttributeError):
                code = None
            raise ServerRefused(f"{url}: HTTP {exc.code}: {detail}", exc.code, code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
            raise GenerationError(f"{url}: failed after {self.max_retries + 1} attempts: {exc}") from None

    def _context_length(self, refusal: ServerRefused) -> int:
        """The model's context, from the server (vLLM's and codemill's GET /tokenizer_info)."""
        url = f"{self.root}/tokenizer_info?model={urllib.parse.quote(self.model)}"
        try:
            context = int(self._json(url)["model_max_length"])
        except (GenerationError, KeyError, TypeError, ValueError) as exc:
            why = " ".join(str(exc).split())[:200]
            raise GenerationError(f"{refusal}; and the server does not say its context ({why}), so the prompt "
                                  f"cannot be fitted: lower the generation's max_tokens") from None
        log.warning("eval: prompts longer than the model's context (%d tokens) less max_tokens keep their last "
                    "tokens (truncate_prompt_tokens), as with the in-process engine", context)
        return context

    def _request(self, prompts: list[str], n: int, stop: list[str], params: dict, seed: int) -> list[list[str]]:
        body = {"model": self.model, "prompt": prompts, "n": n, "stop": stop[:MAX_STOP_STRINGS] or None,
                "seed": seed, **params}
        if self.context is not None:
            body["truncate_prompt_tokens"] = max(1, self.context - params["max_tokens"])
        try:
            out = self._json(self.url, body)
        except ServerRefused as exc:
            if exc.code != "context_length_exceeded" or "truncate_prompt_tokens" in body:
                raise
            self.context = self._context_length(exc)
            body["truncate_prompt_tokens"] = max(1, self.context - params["max_tokens"])
            out = self._json(self.url, body)
        texts: list[list[str]] = [[""] * n for _ in prompts]
        for choice in out.get("choices", []):
            i = int(choice.get("index", 0))
            texts[i // n][i % n] = choice.get("text") or ""
        return texts

    def generate(self, prompts, n, temperature, top_p, max_tokens, stop, progress=None) -> list[list[str]]:
        """`progress` (codemill.eval.progress.Progress) advances by the prompts of each request as it finishes."""
        stops = stops_for(stop, len(prompts))
        ns, limits = per_prompt(n, len(prompts)), per_prompt(max_tokens, len(prompts))
        # One request per (batch of prompts sharing their stop strings, n and length limit, chunk of n).
        work = []
        for start in range(0, len(prompts), self.batch_size):
            idx = list(range(start, min(start + self.batch_size, len(prompts))))
            groups: dict[tuple, list[int]] = {}
            for i in idx:
                groups.setdefault((tuple(stops[i]), ns[i], limits[i]), []).append(i)
            for (stop_key, count, limit), members in groups.items():
                params = {"temperature": temperature, "top_p": top_p, "max_tokens": limit}
                for c, size in enumerate(_chunks(count, self.n_per_request)):
                    work.append((members, size, list(stop_key), params, self.seed + 1000 * members[0] + c))
        results: list[list[str]] = [[] for _ in prompts]
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [(members, pool.submit(self._request, [prompts[i] for i in members], size, st, params, seed))
                       for members, size, st, params, seed in work]
            if progress is not None:
                owed = {fut: members for members, fut in futures}
                for fut in as_completed(owed):
                    progress.advance(len(owed[fut]))  # a prompt split over requests counts more than once
            for members, fut in futures:  # assembled in request order: the same samples every run
                for i, texts in zip(members, fut.result()):
                    results[i].extend(texts)
        return results


class EngineGenerator:
    """codemill's serve engine, loaded from an export, generating all prompts with continuous batching.

    A prompt that does not fit the model's context with `max_tokens` keeps its last tokens (the function's
    signature is at the end) and a generation budget of at least a quarter of the context."""

    def __init__(self, export_uri: str, device: str = "auto", dtype: str | None = None, max_batch_size: int = 64,
                 seed: int = 0, attention: str = "auto", cuda_graphs: bool | None = None,
                 stall_s: float = DEFAULT_STALL_S):
        from codemill.serve.loader import load_engine

        if dtype is None:
            import torch
            dtype = "bf16" if (device != "cpu" and torch.cuda.is_available()) else "fp32"
        self.loaded = load_engine(export_uri, dtype=dtype, device=device, max_batch_size=max_batch_size,
                                  cuda_graphs=device != "cpu" if cuda_graphs is None else cuda_graphs,
                                  attention=attention)
        self.engine, self.tokenizer = self.loaded.engine, self.loaded.tokenizer
        self.context = self.loaded.context_length
        self.max_slots = max_batch_size
        self.seed = seed
        self.stall_s = stall_s
        self.truncated_prompts = 0
        # How many requests the engine queues (its scheduler's bound, where the engine keeps it there).
        self._queue_bound = getattr(self.engine, "max_queue", None) or getattr(
            getattr(self.engine, "scheduler", None), "max_queue", 256)

    def generate(self, prompts, n, temperature, top_p, max_tokens, stop, seeds: list[int] | None = None
                 ) -> list[list[str]]:
        """`seeds`: one base seed per prompt (default: derived from the prompt's position), so that how prompts
        are spread over engines does not change what each one samples. Raises GenerationError when no output
        comes for `stall_s` while requests remain (codemill.eval.stall), with what the engine held then."""
        stops = stops_for(stop, len(prompts))
        ns, limits = per_prompt(n, len(prompts)), per_prompt(max_tokens, len(prompts))
        texts: dict[tuple[int, int], list[str]] = {}
        errors: list[str] = []

        engine = self.engine
        steps = [0]
        watch = StallWatch(f"eval: engine generation of {len(prompts)} prompts", lambda: (
            f"{steps[0]} steps, {engine.num_running} sequences running, {engine.num_waiting} requests waiting, "
            f"{engine.blocks.num_free} free KV blocks"), stall_s=self.stall_s)

        def emit_for(p: int, offset: int):
            def emit(out):
                watch.produced()
                if out.error:
                    errors.append(out.error)
                for d in out.deltas:
                    texts.setdefault((p, offset + d.index), []).append(d.text)
            return emit

        def step() -> None:
            engine.step()
            steps[0] += 1
            watch.check()

        try:
            with watch:
                for p, prompt in enumerate(prompts):
                    self._add(p, prompt, ns[p], limits[p], stops[p], temperature, top_p, seeds, emit_for, step)
                while engine.has_work():
                    step()
        except Stalled as exc:  # the engine is emptied, so that the next call starts clean
            engine.fail_all(str(exc))
            raise GenerationError(str(exc)) from None
        if errors:
            raise GenerationError(f"the engine failed {len(errors)} request(s): {errors[0]}")
        return [["".join(texts.get((p, j), [])) for j in range(ns[p])] for p in range(len(prompts))]

    def _add(self, p: int, prompt: str, n: int, limit: int, stop: list[str], temperature: float, top_p: float,
             seeds: list[int] | None, emit_for, step) -> None:
        """Prompt p's requests (n samples in chunks of the engine's slots), each once the bounded queue has room."""
        from codemill.serve.engine import GenerationParams

        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
        budget = min(limit, self.context - 1)
        if len(ids) + budget > self.context:
            budget = min(budget, max(self.context // 4, self.context - len(ids)))
            if len(ids) + budget > self.context:
                ids = ids[-(self.context - budget):]
                self.truncated_prompts += 1
        offset = 0
        for c, size in enumerate(_chunks(n, self.max_slots)):
            params = GenerationParams(max_tokens=budget, temperature=temperature, top_p=top_p, n=size,
                                      seed=(seeds[p] if seeds else self.seed + 7919 * p) + c, stop=tuple(stop))
            while self.engine.num_waiting >= max(1, self._queue_bound - 1):
                step()  # the queue is bounded: decode until there is room
            self.engine.add_request(f"p{p}c{c}", ids, params, emit_for(p, offset))
            offset += size
