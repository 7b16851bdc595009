"""OpenAI's completions API over an `AsyncEngine`: request validation, tokenisation, language tags (SPEC §2),
echo, logprobs, streaming chunks, and errors in OpenAI's shape. Ray-free and HTTP-free: it maps a request
body (a dict) to a response dict or a stream of chunk dicts, raising `APIError` for anything refused."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from codemill.languages import BY_NAME
from codemill.serve.async_engine import AsyncEngine
from codemill.serve.engine import (
    GenerationParams,
    QueueFull,
    RequestMetrics,
    RequestOutput,
    SequenceDelta,
    TokenLogprob,
)
from codemill.serve.sampling import MAX_LOGPROBS

MAX_STOP_STRINGS = 4  # OpenAI's limit
LANGUAGES_BY_LOWER = {name.lower(): lang for name, lang in BY_NAME.items()}


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


class CompletionRequest(BaseModel):
    # Unknown fields are ignored (clients send extras); known ones must have their type exactly.
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    seed: int | None = None
    logprobs: int | None = None
    echo: bool = False
    user: str | None = None
    top_k: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    language: str | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever comes (benchmarks)


@dataclass(frozen=True)
class Limits:
    max_n: int
    max_num_beams: int
    context_length: int
    default_max_tokens: int
    vocab_size: int


def parse_request(body: object) -> CompletionRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if "prompt" not in body:
        raise bad_request("'prompt' is required", "prompt")
    try:
        return CompletionRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err["loc"] else None
        raise bad_request(f"invalid value for '{param}': {err['msg']}", param) from None


def generation_params(req: CompletionRequest, limits: Limits) -> GenerationParams:
    def check(ok: bool, param: str, message: str) -> None:
        if not ok:
            raise bad_request(message, param)

    max_tokens = limits.default_max_tokens if req.max_tokens is None else req.max_tokens
    check(math.isfinite(req.temperature) and req.temperature >= 0, "temperature", "temperature must be >= 0")
    check(math.isfinite(req.top_p) and 0 < req.top_p <= 1, "top_p", "top_p must be in (0, 1]")
    check(max_tokens >= 1, "max_tokens", "max_tokens must be >= 1")
    check(1 <= req.n <= limits.max_n, "n", f"n must be between 1 and {limits.max_n}")
    check(1 <= req.num_beams <= limits.max_num_beams, "num_beams",
          f"num_beams must be between 1 and {limits.max_num_beams}")
    check(req.num_beams == 1 or req.n <= req.num_beams, "n", "n must not exceed num_beams")
    check(req.logprobs is None or 0 <= req.logprobs <= MAX_LOGPROBS, "logprobs",
          f"logprobs must be between 0 and {MAX_LOGPROBS}")
    check(req.top_k >= -1, "top_k", "top_k must be >= 0 (0 or -1: off)")
    check(math.isfinite(req.length_penalty), "length_penalty", "length_penalty must be a finite number")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    check(len(stop) <= MAX_STOP_STRINGS and all(stop), "stop",
          f"stop must be at most {MAX_STOP_STRINGS} non-empty strings")
    check(req.language is None or req.language.lower() in LANGUAGES_BY_LOWER, "language",
          f"unknown language {req.language!r}; known: {', '.join(BY_NAME)}")
    return GenerationParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                            top_k=max(req.top_k, 0), n=req.n, seed=req.seed, stop=tuple(stop),
                            logprobs=req.logprobs, prompt_logprobs=req.echo and req.logprobs is not None,
                            num_beams=req.num_beams, length_penalty=req.length_penalty, ignore_eos=req.ignore_eos)


def merge_outputs(outs: list[RequestOutput]) -> RequestOutput:
    """Consecutive outputs of one request as one: each sequence's text, tokens and logprobs joined."""
    if len(outs) == 1:
        return outs[0]
    by_index: dict[int, SequenceDelta] = {}
    for out in outs:
        for d in out.deltas:
            if d.index not in by_index:
                by_index[d.index] = SequenceDelta(d.index, "", [], [])
            m = by_index[d.index]
            m.text += d.text
            m.token_ids = m.token_ids + d.token_ids
            m.logprobs = m.logprobs + d.logprobs
            m.finish_reason = d.finish_reason or m.finish_reason
    first = next((o.prompt_logprobs for o in outs if o.prompt_logprobs is not None), None)
    return RequestOutput(outs[0].request_id, list(by_index.values()), outs[-1].finished, first, outs[-1].metrics)


class CompletionService:
    def __init__(self, engine: AsyncEngine, tokenizer, model_name: str, limits: Limits,
                 on_finished: Callable[[RequestMetrics], None] | None = None, stream_interval_s: float = 0.0):
        self.engine, self.tokenizer, self.model_name, self.limits = engine, tokenizer, model_name, limits
        self.on_finished, self.stream_interval_s = on_finished, stream_interval_s

    # ------------------------------------------------------------ prompts
    def prompts(self, req: CompletionRequest) -> list[list[int]]:
        p = req.prompt
        if isinstance(p, str):
            texts, ids = [p], None
        elif p and all(isinstance(x, str) for x in p):
            texts, ids = list(p), None
        elif p and all(isinstance(x, int) for x in p):
            texts, ids = None, [list(p)]
        elif p and all(isinstance(x, list) for x in p):
            texts, ids = None, [list(x) for x in p]
        else:
            raise bad_request("prompt must be a string, a list of strings, or (lists of) token ids", "prompt")
        tag = LANGUAGES_BY_LOWER[req.language.lower()].tag + "\n" if req.language else ""
        if texts is not None:
            ids = [self.tokenizer.encode(tag + t, add_special_tokens=False).ids for t in texts]
        elif tag:
            tag_ids = self.tokenizer.encode(tag, add_special_tokens=False).ids
            ids = [tag_ids + x for x in ids]
        for x in ids:
            if not x:
                raise bad_request("the prompt is empty", "prompt")
            if any(t < 0 or t >= self.limits.vocab_size for t in x):
                raise bad_request(f"token ids must be in [0, {self.limits.vocab_size})", "prompt")
        return ids

    def check_context(self, prompts: list[list[int]], params: GenerationParams) -> None:
        longest = max(len(p) for p in prompts)
        if longest + params.max_tokens > self.limits.context_length:
            raise bad_request(f"this model's context is {self.limits.context_length} tokens; the prompt has "
                              f"{longest} and max_tokens asks for {params.max_tokens} more", "max_tokens",
                              "context_length_exceeded")

    # ------------------------------------------------------------ running
    async def _run(self, prompts: list[list[int]], params: GenerationParams
                   ) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Every prompt as its own engine request, their outputs merged as they come: (prompt index, output)."""
        merged: asyncio.Queue = asyncio.Queue()
        done = object()
        streams = [self.engine.generate(uuid.uuid4().hex, ids, params) for ids in prompts]

        async def pump(i: int, stream) -> None:
            try:
                async for out in stream:
                    await merged.put((i, out))
            except QueueFull as exc:
                await merged.put((i, APIError(503, str(exc), "server_overloaded", None, "queue_full")))
            except ValueError as exc:
                await merged.put((i, bad_request(str(exc), "prompt")))
            finally:
                await merged.put((i, done))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            remaining = len(tasks)
            loop, last = asyncio.get_running_loop(), None
            while remaining:
                # After the first output, outputs are gathered for up to `stream_interval_s` and merged per
                # prompt: each chunk costs the replica's event loop serialisation and a Ray Serve stream item,
                # and at one chunk per token per request that work, not the GPU, would bound a large batch.
                batch = [await merged.get()]
                if last is not None and self.stream_interval_s > 0:
                    wait = last + self.stream_interval_s - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                last = loop.time()
                while not merged.empty():
                    batch.append(merged.get_nowait())
                ready: dict[int, list[RequestOutput]] = {}
                for i, item in batch:
                    if item is done:
                        remaining -= 1
                    elif isinstance(item, APIError):
                        raise item
                    elif item.error:
                        raise APIError(500, item.error, "server_error")
                    else:
                        if item.finished and item.metrics and self.on_finished:
                            self.on_finished(item.metrics)
                        ready.setdefault(i, []).append(item)
                for i, outs in ready.items():
                    yield i, merge_outputs(outs)
        finally:
            for t in tasks:
                t.cancel()

    def _logprobs(self, entries: list[TokenLogprob], offset: int) -> dict:
        tokens, token_lps, tops, offsets = [], [], [], []
        for e in entries:
            text = self.tokenizer.decode([e.token], skip_special_tokens=False)
            tokens.append(text)
            token_lps.append(e.logprob)
            tops.append({self.tokenizer.decode([t], skip_special_tokens=False): lp for t, lp in e.top}
                        if e.logprob is not None else None)
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}

    def _header(self, rid: str, created: int) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": self.model_name}

    # ------------------------------------------------------------ the API
    def prepare(self, body: object) -> tuple[CompletionRequest, GenerationParams, list[list[int]]]:
        req = parse_request(body)
        params = generation_params(req, self.limits)
        prompts = self.prompts(req)
        self.check_context(prompts, params)
        return req, params, prompts

    async def complete(self, body: object) -> dict:
        req, params, prompts = self.prepare(body)
        n = params.n
        texts = [""] * (len(prompts) * n)
        entries: list[list[TokenLogprob]] = [[] for _ in texts]
        reasons: list[str | None] = [None] * len(texts)
        prompt_lps: dict[int, list[TokenLogprob]] = {}
        completion_tokens = 0
        async for i, out in self._run(prompts, params):
            if out.prompt_logprobs is not None:
                prompt_lps[i] = out.prompt_logprobs
            for d in out.deltas:
                k = i * n + d.index
                texts[k] += d.text
                entries[k].extend(d.logprobs)
                reasons[k] = d.finish_reason or reasons[k]
            if out.finished and out.metrics:
                completion_tokens += out.metrics.completion_tokens
        choices = []
        for k, text in enumerate(texts):
            i = k // n
            prompt_text = self.tokenizer.decode(prompts[i], skip_special_tokens=False) if req.echo else ""
            logprobs = None
            if req.logprobs is not None:
                logprobs = self._logprobs(prompt_lps.get(i, []) + entries[k], 0)
            choices.append({"index": k, "text": prompt_text + text, "logprobs": logprobs,
                            "finish_reason": reasons[k] or "length"})
        prompt_tokens = sum(len(p) for p in prompts)
        return {**self._header("cmpl-" + uuid.uuid4().hex, int(time.time())), "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    async def stream(self, body: object) -> AsyncIterator[dict]:
        """Chunks for server-sent events (the caller adds `data: ` and the final `[DONE]`). Errors (bad
        request, full queue) are raised here, before any chunk, so they can still get their HTTP status."""
        req, params, prompts = self.prepare(body)
        chunks = self._stream(req, params, prompts)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = None

        async def rest() -> AsyncIterator[dict]:
            if first is not None:
                yield first
                async for chunk in chunks:
                    yield chunk

        return rest()

    async def _stream(self, req: CompletionRequest, params: GenerationParams, prompts: list[list[int]]
                      ) -> AsyncIterator[dict]:
        header = self._header("cmpl-" + uuid.uuid4().hex, int(time.time()))
        n = params.n
        offsets = [0] * (len(prompts) * n)
        started = [False] * len(offsets)
        completion_tokens = 0
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        async for i, out in self._run(prompts, params):
            choices = []
            for d in out.deltas:
                k = i * n + d.index
                text = d.text
                lp_entries = list(d.logprobs)
                if not started[k]:
                    started[k] = True
                    if req.echo:
                        text = self.tokenizer.decode(prompts[i], skip_special_tokens=False) + text
                        lp_entries = (out.prompt_logprobs or []) + lp_entries
                logprobs = self._logprobs(lp_entries, offsets[k]) if req.logprobs is not None else None
                offsets[k] += len(text)
                choices.append({"index": k, "text": text, "logprobs": logprobs, "finish_reason": d.finish_reason})
            if out.finished and out.metrics:
                completion_tokens += out.metrics.completion_tokens
            if choices:
                yield {**header, "choices": choices}
        if include_usage:
            prompt_tokens = sum(len(p) for p in prompts)
            yield {**header, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                       "completion_tokens": completion_tokens,
                                                       "total_tokens": prompt_tokens + completion_tokens}}
