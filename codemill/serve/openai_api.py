"""OpenAI's completions API over an engine client: request parsing and validation (every field bounded),
tokenisation, language tags (SPEC §2), echo, logprobs, streaming chunks, and errors in OpenAI's shape.
Ray-free and HTTP-free: it maps a request body (a dict) to a response dict or a stream of chunk dicts,
raising `APIError` for anything refused. Nothing reaches the engine before it has passed `prepare`."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from codemill.languages import BY_NAME
from codemill.serve.engine import (
    GenerationParams,
    QueueFull,
    RequestMetrics,
    RequestOutput,
    TokenLogprob,
)
from codemill.serve.sampling import MAX_LOGPROBS, MIN_TEMPERATURE
from codemill.serve.sequence import merge_outputs

log = logging.getLogger("codemill.serve")

LANGUAGES_BY_LOWER = {name.lower(): lang for name, lang in BY_NAME.items()}
MAX_TEMPERATURE = 2.0          # OpenAI's range
MAX_PENALTY = 2.0              # presence/frequency penalties: OpenAI's [-2, 2]
MAX_LOGIT_BIAS = 100.0         # OpenAI's [-100, 100]
MAX_LOGIT_BIAS_ENTRIES = 1_024
MAX_STOP_LENGTH = 256          # characters per stop string
MAX_LENGTH_PENALTY = 10.0
MAX_TEXT_FIELD = 256           # model, user, language: short names
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)
MAX_JSON_DEPTH = 32


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


# ----------------------------------------------------------------------------- the body
def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_body(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400: invalid UTF-8 or JSON, NaN/Infinity (not JSON), numbers
    past float range or Python's digit limit, nesting deeper than MAX_JSON_DEPTH, and strings holding lone
    surrogates (JSON's \\ud800 escapes decode to text no UTF-8 encoder or tokenizer accepts)."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise bad_request("the body nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    _check_values(body)
    return body


def _check_values(body: Any) -> None:
    stack = [(body, 0, None)]
    while stack:
        node, depth, top = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise bad_request("the body nests too deeply", top)
        if isinstance(node, str):
            _check_text(node, top)
        elif isinstance(node, float) and not math.isfinite(node):
            raise bad_request("numbers must be finite", top)
        elif isinstance(node, dict):
            for k, v in node.items():
                _check_text(k, top or k)
                stack.append((v, depth + 1, top or k))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, top) for v in node)


def _check_text(s: str, param: str | None) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("strings must be valid Unicode (a lone surrogate was sent)", param) from None


# ----------------------------------------------------------------------------- the request
@dataclass(frozen=True)
class Limits:
    max_n: int
    max_num_beams: int
    context_length: int
    default_max_tokens: int
    vocab_size: int
    max_prompts: int = 64
    max_stop: int = 64


@dataclass(frozen=True)
class CompletionRequest:
    model: str | None
    prompts: list[str] | list[list[int]]
    params: GenerationParams
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None
    language: str | None
    best_of: int
    truncate_prompt_tokens: int | None = None   # vLLM's: keep only the prompt's last k tokens


def _field(body: dict, name: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    """body[name] if it has one of the JSON types `kinds` (JSON null means the default); bool is no number."""
    if name not in body or body[name] is None:
        return default
    value = body[name]
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join({int: "an integer", float: "a number", bool: "a boolean", str: "a string",
                             list: "a list", dict: "an object"}[k] for k in kinds)
        raise bad_request(f"'{name}' must be {names}, got {json.dumps(value)[:60]}", name)
    return value


def _number(body: dict, name: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        value = float(_field(body, name, (int, float), default))
    except OverflowError:
        raise bad_request(f"'{name}' is out of range", name) from None
    if not (lo < value if lo_open else lo <= value) or value > hi:
        bracket = "(" if lo_open else "["
        raise bad_request(f"'{name}' must be in {bracket}{lo}, {hi}], got {value}", name)
    return value


def _integer(body: dict, name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = _field(body, name, (int,), default)
    if value is not None and not lo <= value <= hi:
        raise bad_request(f"'{name}' must be an integer in [{lo}, {hi}], got {value}", name)
    return value


def _short_text(body: dict, name: str) -> str | None:
    value = _field(body, name, (str,))
    if value is not None and len(value) > MAX_TEXT_FIELD:
        raise bad_request(f"'{name}' must be at most {MAX_TEXT_FIELD} characters", name)
    return value


def _prompts(body: dict, limits: Limits) -> list[str] | list[list[int]]:
    if "prompt" not in body or body["prompt"] is None:
        raise bad_request("'prompt' is required", "prompt")
    p = body["prompt"]
    shape = "prompt must be a string, a list of strings, a list of token ids, or a list of lists of token ids"
    if isinstance(p, str):
        prompts: list = [p]
    elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
        prompts = list(p)
    elif isinstance(p, list) and p and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
        prompts = [list(p)]
    elif isinstance(p, list) and p and all(isinstance(x, list) for x in p):
        prompts = [list(x) for x in p]
        for x in prompts:
            if not x or not all(isinstance(t, int) and not isinstance(t, bool) for t in x):
                raise bad_request(shape, "prompt")
    else:
        raise bad_request(shape if p != [] else "the prompt is empty", "prompt")
    if len(prompts) > limits.max_prompts:
        raise bad_request(f"at most {limits.max_prompts} prompts per request, got {len(prompts)}", "prompt")
    for x in prompts:
        if isinstance(x, list) and any(t < 0 or t >= limits.vocab_size for t in x):
            raise bad_request(f"token ids must be in [0, {limits.vocab_size})", "prompt")
    return prompts


def _stop(body: dict, limits: Limits) -> tuple[str, ...]:
    raw = _field(body, "stop", (str, list))
    stop = [raw] if isinstance(raw, str) else list(raw or [])
    if len(stop) > limits.max_stop:
        raise bad_request(f"'stop' may hold at most {limits.max_stop} strings, got {len(stop)}", "stop")
    for s in stop:
        if not isinstance(s, str) or not s or len(s) > MAX_STOP_LENGTH:
            raise bad_request(f"every stop string must be a non-empty string of at most {MAX_STOP_LENGTH} "
                              f"characters", "stop")
    return tuple(dict.fromkeys(stop))


def _logit_bias(body: dict, limits: Limits) -> tuple[tuple[int, float], ...]:
    raw = _field(body, "logit_bias", (dict,), {})
    if len(raw) > MAX_LOGIT_BIAS_ENTRIES:
        raise bad_request(f"'logit_bias' may hold at most {MAX_LOGIT_BIAS_ENTRIES} entries", "logit_bias")
    out = []
    for key, bias in raw.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 9) or int(key) >= limits.vocab_size:
            raise bad_request(f"'logit_bias' keys must be token ids in [0, {limits.vocab_size}), got {key[:20]!r}",
                              "logit_bias")
        number = isinstance(bias, (int, float)) and not isinstance(bias, bool)
        if not number or not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
            raise bad_request(f"'logit_bias' values must be numbers in [-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}]",
                              "logit_bias")
        out.append((int(key), float(bias)))
    return tuple(sorted(out))


def parse_request(body: object, limits: Limits) -> CompletionRequest:
    """A request body -> a validated request, or an APIError (400) naming the field. Unknown fields are ignored
    (clients send extras); known ones must have their JSON type and lie within bounds."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = _short_text(body, "model")
    _short_text(body, "user")
    prompts = _prompts(body, limits)
    suffix = _field(body, "suffix", (str,))
    if suffix:
        raise bad_request("'suffix' (infilling) is not supported: this model was not trained to fill in the middle",
                          "suffix")
    echo = bool(_field(body, "echo", (bool,), False))
    stream = bool(_field(body, "stream", (bool,), False))
    options = _field(body, "stream_options", (dict,), {})
    if set(options) - {"include_usage", "continuous_usage_stats"}:
        raise bad_request(f"unknown stream_options {sorted(set(options))[:5]}", "stream_options")
    include_usage = _field(options, "include_usage", (bool,), False)
    if options and not stream:
        raise bad_request("'stream_options' needs 'stream': true", "stream_options")
    logprobs = _integer(body, "logprobs", None, 0, MAX_LOGPROBS)
    max_tokens = _integer(body, "max_tokens", limits.default_max_tokens, 0, limits.context_length)
    truncate = _integer(body, "truncate_prompt_tokens", None, 1, limits.context_length)
    if max_tokens == 0 and not echo:
        raise bad_request("'max_tokens' must be >= 1 (0 only with echo, to score the prompt)", "max_tokens")
    temperature = _number(body, "temperature", 1.0, 0.0, MAX_TEMPERATURE)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)
    top_k = _integer(body, "top_k", 0, -1, limits.vocab_size)
    n = _integer(body, "n", 1, 1, limits.max_n)
    best_of = _integer(body, "best_of", n, 1, limits.max_n)
    num_beams = _integer(body, "num_beams", 1, 1, limits.max_num_beams)
    length_penalty = _number(body, "length_penalty", 1.0, -MAX_LENGTH_PENALTY, MAX_LENGTH_PENALTY)
    presence = _number(body, "presence_penalty", 0.0, -MAX_PENALTY, MAX_PENALTY)
    frequency = _number(body, "frequency_penalty", 0.0, -MAX_PENALTY, MAX_PENALTY)
    bias = _logit_bias(body, limits)
    seed = _integer(body, "seed", None, *SEED_RANGE)
    stop = _stop(body, limits)
    ignore_eos = bool(_field(body, "ignore_eos", (bool,), False))
    language = _short_text(body, "language")
    if language is not None and language.lower() not in LANGUAGES_BY_LOWER:
        raise bad_request(f"unknown language {language!r}; known: {', '.join(BY_NAME)}", "language")
    if best_of < n:
        raise bad_request(f"'best_of' ({best_of}) must be >= n ({n})", "best_of")
    if best_of > n:
        raise bad_request("'best_of' > n is not supported; ask for n samples and rank them by their logprobs",
                          "best_of")
    if num_beams > 1:
        if n > num_beams:
            raise bad_request(f"n ({n}) must not exceed num_beams ({num_beams})", "n")
        for name, unsupported in (("logprobs", logprobs is not None), ("presence_penalty", presence != 0),
                                  ("frequency_penalty", frequency != 0), ("logit_bias", bool(bias))):
            if unsupported:
                raise bad_request(f"'{name}' is not supported with beam search (num_beams > 1)", name)
    if len(prompts) * (num_beams if num_beams > 1 else n) > limits.max_prompts * limits.max_n:
        raise bad_request("too many sequences in one request (prompts x n)", "n")
    params = GenerationParams(
        max_tokens=max_tokens, temperature=0.0 if temperature < MIN_TEMPERATURE else temperature, top_p=top_p,
        top_k=max(top_k, 0), n=n, seed=seed, stop=stop, logprobs=logprobs,
        prompt_logprobs=echo and logprobs is not None, num_beams=num_beams, length_penalty=length_penalty,
        ignore_eos=ignore_eos, presence_penalty=presence, frequency_penalty=frequency, logit_bias=bias)
    return CompletionRequest(model, prompts, params, stream, include_usage, echo, logprobs, language, best_of,
                             truncate)


class CompletionService:
    """The completions API of one model over an engine client (`generate(request_id, prompt, params)`, an async
    iterator of RequestOutput that raises QueueFull or ValueError when the engine refuses the request)."""

    def __init__(self, engine, tokenizer, model_name: str, limits: Limits,
                 on_finished: Callable[[RequestMetrics], None] | None = None, stream_interval_s: float = 0.0):
        self.engine, self.tokenizer, self.model_name, self.limits = engine, tokenizer, model_name, limits
        self.on_finished, self.stream_interval_s = on_finished, stream_interval_s
        self._token_text: dict[int, str] = {}

    # ------------------------------------------------------------ prompts
    def tokenize(self, prompts: list[str] | list[list[int]], language: str | None) -> list[list[int]]:
        tag = LANGUAGES_BY_LOWER[language.lower()].tag + "\n" if language else ""
        if prompts and isinstance(prompts[0], str):
            ids = [self.tokenizer.encode(tag + t, add_special_tokens=False).ids for t in prompts]
        else:
            tag_ids = self.tokenizer.encode(tag, add_special_tokens=False).ids if tag else []
            ids = [tag_ids + list(x) for x in prompts]
        if any(not x for x in ids):
            raise bad_request("the prompt is empty", "prompt")
        return ids

    def check_context(self, prompts: list[list[int]], params: GenerationParams) -> None:
        longest = max(len(p) for p in prompts)
        if longest + params.max_tokens > self.limits.context_length:
            raise bad_request(f"this model's context is {self.limits.context_length} tokens; the prompt has "
                              f"{longest} and max_tokens asks for {params.max_tokens} more (shorten it, lower "
                              f"max_tokens, or send truncate_prompt_tokens to keep the prompt's last tokens)",
                              "max_tokens", "context_length_exceeded")

    def token_text(self, token: int) -> str:
        text = self._token_text.get(token)
        if text is None:
            text = self._token_text[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return text

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
            except Exception as exc:  # the engine went away: this request fails, the replica answers on
                await merged.put((i, APIError(503, f"the engine is unavailable: {type(exc).__name__}",
                                              "server_error", None, "engine_unavailable")))
            finally:
                await merged.put((i, done))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            remaining = len(tasks)
            loop, last = asyncio.get_running_loop(), None
            while remaining:
                # After the first output, outputs are gathered for up to `stream_interval_s` and merged per
                # prompt: each chunk costs the replica's event loop serialisation and a Ray Serve stream item.
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
                        raise APIError(500, item.error, "server_error", None, "sequence_failed")
                    else:
                        if item.finished and item.metrics and self.on_finished:
                            self._record_finished(item.metrics)
                        ready.setdefault(i, []).append(item)
                for i, outs in ready.items():
                    yield i, merge_outputs(outs)
        finally:
            for t in tasks:
                t.cancel()

    def _record_finished(self, metrics: RequestMetrics) -> None:
        """A metric never fails the request it measures: a failure to record is logged and dropped."""
        try:
            self.on_finished(metrics)
        except Exception:
            log.exception("recording a finished request's metrics failed")

    def _logprobs(self, entries: list[TokenLogprob], offset: int) -> dict:
        """OpenAI's logprobs object. `top_logprobs` holds the k most likely tokens plus the chosen one (as
        OpenAI's does), so a client can always tell whether the choice was the greedy one."""
        tokens, token_lps, tops, offsets = [], [], [], []
        for e in entries:
            text = self.token_text(e.token)
            tokens.append(text)
            token_lps.append(e.logprob)
            if e.logprob is None:
                tops.append(None)
            else:
                top = {self.token_text(t): lp for t, lp in e.top}
                top.setdefault(text, e.logprob)
                tops.append(top)
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}

    def _header(self, rid: str, created: int) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": self.model_name}

    # ------------------------------------------------------------ the API
    def prepare(self, body: object) -> tuple[CompletionRequest, list[list[int]]]:
        req = parse_request(body, self.limits)
        prompts = self.tokenize(req.prompts, req.language)
        if req.truncate_prompt_tokens:  # left truncation, as vLLM's: the end of a prompt is what it continues
            prompts = [p[-req.truncate_prompt_tokens:] for p in prompts]
        self.check_context(prompts, req.params)
        return req, prompts

    async def complete(self, body: object) -> dict:
        req, prompts = self.prepare(body)
        params = req.params
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
        req, prompts = self.prepare(body)
        chunks = self._stream(req, prompts)
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

    async def _stream(self, req: CompletionRequest, prompts: list[list[int]]) -> AsyncIterator[dict]:
        header = self._header("cmpl-" + uuid.uuid4().hex, int(time.time()))
        n = req.params.n
        offsets = [0] * (len(prompts) * n)
        started = [False] * len(offsets)
        completion_tokens = 0
        async for i, out in self._run(prompts, req.params):
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
        if req.include_usage:
            prompt_tokens = sum(len(p) for p in prompts)
            yield {**header, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                       "completion_tokens": completion_tokens,
                                                       "total_tokens": prompt_tokens + completion_tokens}}

    # ------------------------------------------------------------ vLLM's tokenizer endpoints (lm-eval uses them)
    def tokenize_endpoint(self, body: dict) -> dict:
        prompt = _field(body, "prompt", (str,))
        if prompt is None:
            raise bad_request("'prompt' (a string) is required", "prompt")
        special = bool(_field(body, "add_special_tokens", (bool,), False))
        ids = self.tokenizer.encode(prompt, add_special_tokens=special).ids
        return {"tokens": ids, "count": len(ids), "max_model_len": self.limits.context_length}

    def detokenize_endpoint(self, body: dict) -> dict:
        tokens = _field(body, "tokens", (list,))
        if tokens is None or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise bad_request("'tokens' (a list of token ids) is required", "tokens")
        if len(tokens) > self.limits.context_length * 16 or any(t < 0 or t >= self.limits.vocab_size for t in tokens):
            raise bad_request(f"token ids must be in [0, {self.limits.vocab_size})", "tokens")
        return {"prompt": self.tokenizer.decode(tokens, skip_special_tokens=False)}

    def tokenizer_info(self, eos_token: str) -> dict:
        return {"eos_token": eos_token, "bos_token": None, "pad_token": None, "tokenizer_class": "CodeGeeX",
                "model_max_length": self.limits.context_length, "vocab_size": self.limits.vocab_size}
