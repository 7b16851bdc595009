"""The generation engine: a scheduler over KV-cache slots with continuous batching. Ray-free, HTTP-free.

Each `step()`:
1. admits waiting requests while slots and the prefill-token budget allow (a request takes `n` slots, or
   `num_beams`), prefills their prompts together in one padded batch, copies each prompt's cache to its
   other slots (n samples share one prefill) and picks every sequence's first token;
2. decodes one token for every running sequence at once (slots 0..B-1, each at its own position);
3. appends, detokenises, applies stop strings / end-of-text / max_tokens, hands each request its new text,
   frees the slots of finished sequences, and compacts the live slots to the front so the decode batch
   (a bucket ≥ the highest live slot) stays small.

A request's randomness is keyed by its own seed and step (sampling.py), so what else is in the batch does
not change its output. `add_request` and `abort` may be called from any thread; `step` from one.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from codemill.serve.beam import BeamSearch
from codemill.serve.decoder import Decoder
from codemill.serve.detok import TextState
from codemill.serve.runner import DecodeRunner
from codemill.serve.sampling import RowParams, sample

log = logging.getLogger("codemill.serve")

# Look-ahead runs the next decode step before the host has read this one's tokens, for greedy batches up to
# this size: there a step is short and the host's bookkeeping a large share of it, and a sequence ending
# (which wastes the step run ahead) is rare.
LOOKAHEAD_MAX_BATCH = 4


class QueueFull(RuntimeError):
    """The bounded queue of waiting requests is full (HTTP 503)."""


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None      # top logprobs per token (0..5); None: none
    prompt_logprobs: bool = False    # logprobs of the prompt's tokens too (OpenAI's echo + logprobs)
    num_beams: int = 1
    length_penalty: float = 1.0
    ignore_eos: bool = False

    @property
    def slots(self) -> int:
        return self.num_beams if self.num_beams > 1 else self.n


@dataclass
class TokenLogprob:
    token: int
    logprob: float | None
    top: list[tuple[int, float]]


@dataclass
class SequenceDelta:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]
    finish_reason: str | None = None   # "stop" | "length" once finished


@dataclass
class RequestMetrics:
    arrival: float
    admitted: float | None = None
    first_token: float | None = None
    finished: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class RequestOutput:
    request_id: str
    deltas: list[SequenceDelta]
    finished: bool = False
    prompt_logprobs: list[TokenLogprob] | None = None
    metrics: RequestMetrics | None = None
    error: str | None = None     # the engine failed this request (the server keeps running)


Emit = Callable[[RequestOutput], None]


@dataclass
class _Seq:
    req: _Request
    index: int
    slot: int
    seed: int
    text: TextState
    position: int                     # cache positions filled
    pending: int | None = None        # token chosen but not yet fed to the model
    finish_reason: str | None = None
    new_ids: list[int] = field(default_factory=list)
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    row: RowParams | None = None      # its sampling settings, built once

    def __post_init__(self) -> None:
        p = self.req.params
        self.row = RowParams(p.temperature, p.top_k, p.top_p, self.seed, p.logprobs)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class _Request:
    id: str
    prompt: list[int]
    params: GenerationParams
    emit: Emit
    metrics: RequestMetrics
    seqs: list[_Seq] = field(default_factory=list)
    beam: BeamSearch | None = None
    prompt_logprobs: list[TokenLogprob] | None = None

    @property
    def finished(self) -> bool:
        return bool(self.seqs) and all(s.finished for s in self.seqs)


@dataclass
class StepStats:
    batch_size: int
    prefill_tokens: int
    seconds: float
    tokens: int


class Engine:
    def __init__(self, decoder: Decoder, tokenizer=None, *, eos_id: int | None = None, valid_vocab: int | None = None,
                 max_queue: int = 256, max_prefill_tokens: int = 8192, batch_buckets: list[int] | None = None,
                 length_buckets: list[int] | None = None, cuda_graphs: bool = True,
                 on_step: Callable[[StepStats], None] | None = None, lookahead: bool | None = None,
                 lookahead_max_batch: int = LOOKAHEAD_MAX_BATCH):
        self.decoder, self.tokenizer, self.eos_id = decoder, tokenizer, eos_id
        self.valid_vocab = min(valid_vocab or decoder.vocab_size, decoder.vocab_size)
        self.max_queue, self.max_prefill_tokens = max_queue, max_prefill_tokens
        self.context_length = decoder.max_length
        self.runner = DecodeRunner(decoder, batch_buckets or [1, 2, 4, 8, 16, 32, 64, 128],
                                   length_buckets or [256, 512, 1024, 2048], cuda_graphs)
        self.on_step = on_step
        # Look-ahead (on a GPU by default): see `_decode`.
        self.lookahead = decoder.device.type == "cuda" if lookahead is None else lookahead
        self.lookahead_max_batch = lookahead_max_batch
        self._ahead: tuple[tuple, torch.Tensor] | None = None  # (the batch it was launched for, its logits)
        self.steps_ahead_used = self.steps_ahead_wasted = 0
        self._ahead_tokens = torch.zeros(self.runner.batch_buckets[-1], dtype=torch.long,
                                         pin_memory=self.runner.use_graphs)
        self._lock = threading.Lock()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._aborted: set[str] = set()
        self._running: list[_Request] = []
        self._slots: list[_Seq | None] = [None] * decoder.max_slots
        self.work = threading.Event()  # set while there is something to do

    # ------------------------------------------------------------ thread-safe API
    def add_request(self, request_id: str, prompt: list[int], params: GenerationParams, emit: Emit) -> None:
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if len(prompt) + params.max_tokens > self.context_length:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                             f"context length {self.context_length}")
        if params.slots > self.decoder.max_slots:
            raise ValueError(f"{params.slots} sequences exceed the {self.decoder.max_slots} KV-cache slots")
        req = _Request(request_id, list(prompt), params, emit, RequestMetrics(time.time(), prompt_tokens=len(prompt)))
        with self._lock:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (max_queue={self.max_queue})")
            self._waiting.append(req)
        self.work.set()

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)
        self.work.set()

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._waiting or self._running or self._aborted)

    @property
    def num_running(self) -> int:
        return sum(1 for s in self._slots if s is not None)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    # ------------------------------------------------------------ the step
    def step(self) -> None:
        started = time.perf_counter()
        self._apply_aborts()
        admitted = self._admit()
        prefill_tokens = self._prefill(admitted) if admitted else 0
        live = [s for s in self._slots if s is not None and not s.finished]
        if live:
            self._decode(live)
        produced = self._finish_step()
        self._compact()
        if self.on_step:
            self.on_step(StepStats(len(live), prefill_tokens, time.perf_counter() - started, produced))
        if not self.has_work():
            self.work.clear()

    def run_until_done(self) -> None:
        while self.has_work():
            self.step()

    def fail_all(self, message: str) -> None:
        """After a step raised: end every request with an error and free every slot, so later requests start
        from a clean state."""
        with self._lock:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for req in self._running + waiting:
            req.emit(RequestOutput(req.id, [], True, error=message))
        for req in self._running:
            self._release(req)
        self._running = []
        self._slots = [None] * len(self._slots)
        self._ahead = None

    def _apply_aborts(self) -> None:
        with self._lock:
            aborted, self._aborted = self._aborted, set()
            self._waiting = collections.deque(r for r in self._waiting if r.id not in aborted)
        for req in [r for r in self._running if r.id in aborted]:
            self._release(req)
            self._running.remove(req)

    def _admit(self) -> list[_Request]:
        admitted: list[_Request] = []
        free = [i for i, s in enumerate(self._slots) if s is None]
        budget_rows, longest = 0, 0
        with self._lock:
            while self._waiting:
                req = self._waiting[0]
                longest_if = max(longest, len(req.prompt))
                padded = (budget_rows + 1) * longest_if
                if req.params.slots > len(free) or (admitted and padded > self.max_prefill_tokens):
                    break
                self._waiting.popleft()
                budget_rows, longest = budget_rows + 1, longest_if
                admitted.append(req)
                slots, free = free[:req.params.slots], free[req.params.slots:]
                req.metrics.admitted = time.time()
                self._assign(req, slots)
        return admitted

    def _assign(self, req: _Request, slots: list[int]) -> None:
        p = req.params
        base_seed = p.seed if p.seed is not None else random.getrandbits(63)
        for i, slot in enumerate(slots):
            # Sample i of a seeded request draws from its own stream, a function of (seed, i).
            seed = (base_seed + i * 0x9E3779B97F4A7C15) % (1 << 63)
            seq = _Seq(req, i, slot, seed, TextState(self.tokenizer, p.stop), position=len(req.prompt))
            req.seqs.append(seq)
            self._slots[slot] = seq
        if p.num_beams > 1:
            req.beam = BeamSearch(p.num_beams, p.max_tokens, p.length_penalty,
                                  None if p.ignore_eos else self.eos_id, self.valid_vocab)
        self._running.append(req)

    def _prefill(self, admitted: list[_Request]) -> int:
        dev = self.decoder.device
        longest = max(len(r.prompt) for r in admitted)
        tokens = torch.zeros(len(admitted), longest, dtype=torch.long)
        for row, req in enumerate(admitted):
            tokens[row, :len(req.prompt)] = torch.tensor(req.prompt)
        lengths = torch.tensor([len(r.prompt) for r in admitted])
        slots = torch.tensor([r.seqs[0].slot for r in admitted])
        all_logits = any(r.params.prompt_logprobs for r in admitted)
        logits = self.decoder.prefill(tokens.to(dev), lengths.to(dev), slots.to(dev), all_logits=all_logits)
        for row, req in enumerate(admitted):
            n = len(req.prompt)
            last = logits[row, n - 1] if all_logits else logits[row]
            if req.params.prompt_logprobs:
                req.prompt_logprobs = self._prompt_logprobs(req, logits[row, :n])
            others = [s.slot for s in req.seqs[1:]]
            self.decoder.copy_slots([req.seqs[0].slot] * len(others), others, n)
            if req.beam is not None:
                self._beam_step(req, last[None])
            else:
                self._sample_rows(req.seqs, last[None].expand(len(req.seqs), -1))
        return int(lengths.sum())

    def _prompt_logprobs(self, req: _Request, logits: torch.Tensor) -> list[TokenLogprob]:
        """The model's logprob of each prompt token given the ones before (the first has none)."""
        k = max(req.params.logprobs or 0, 1)
        logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
        ids = torch.tensor(req.prompt[1:], device=logprobs.device)
        chosen = logprobs.gather(1, ids[:, None])[:, 0].cpu().tolist()
        top = torch.topk(logprobs[:, :self.valid_vocab], k, dim=-1)
        top_ids, top_vals = top.indices.cpu().tolist(), top.values.cpu().tolist()
        out = [TokenLogprob(req.prompt[0], None, [])]
        for i, tok in enumerate(req.prompt[1:]):
            out.append(TokenLogprob(tok, chosen[i], list(zip(top_ids[i], top_vals[i]))[:req.params.logprobs or 0]))
        return out

    def _decode(self, live: list[_Seq]) -> None:
        top = max(s.slot for s in live) + 1
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == self._batch_key(live):
            logits = ahead[1]  # this step already ran, launched by the last one
            self.steps_ahead_used += 1
        else:
            self.steps_ahead_wasted += ahead is not None
            tokens, positions = [0] * top, [0] * top
            for s in live:
                tokens[s.slot], positions[s.slot] = s.pending, s.position
            logits = self.runner(tokens, positions)
        for s in live:
            s.position += 1
            s.pending = None
        if self._can_look_ahead(live, top):
            self._decode_ahead(live, top, logits)
            return
        # All sampled sequences in one batched call (one host sync per step); beams per request.
        sampled = [s for s in live if s.req.beam is None]
        if sampled:
            self._sample_rows(sampled, self._rows(logits, [s.slot for s in sampled]))
        for req in self._running:
            if req.beam is not None and not req.finished:
                self._beam_step(req, self._rows(logits, [s.slot for s in req.seqs if not s.finished]))

    def _decode_ahead(self, live: list[_Seq], top: int, logits: torch.Tensor) -> None:
        """Greedy tokens chosen on the device, their copy to the host queued, then the next step launched from
        them before the host reads them: the host's bookkeeping of this step overlaps the device's next step.
        The next `_decode` uses that step if the batch is still the one it was run for (no sequence ended or
        joined, no slot moved); otherwise it runs the step again, the run-ahead one having only written
        the same keys/values, or some into slots since freed."""
        chosen = logits[:top, :self.valid_vocab].argmax(dim=-1)
        host = self._ahead_tokens[:top]
        host.copy_(chosen, non_blocking=True)
        copied = torch.cuda.Event() if chosen.is_cuda else None
        if copied is not None:
            copied.record()
        following = self.runner.advance(chosen, [s.position for s in live])
        if copied is not None:
            copied.synchronize()
        tokens = host.tolist()
        for s in live:
            self._append(s, tokens[s.slot], None)
        self._ahead = (self._batch_key(live), following)

    def _can_look_ahead(self, live: list[_Seq], top: int) -> bool:
        if not self.lookahead or len(live) > self.lookahead_max_batch or top != len(live) or self._waiting:
            return False
        for s in live:
            p = s.req.params
            if s.req.beam is not None or p.temperature != 0 or p.logprobs is not None:
                return False
            if len(s.text.ids) + 2 > p.max_tokens or s.position + 2 > self.context_length:
                return False  # it ends by length this step or the next: the step ahead would be wasted
        return True

    @staticmethod
    def _batch_key(live: list[_Seq]) -> tuple:
        return tuple((id(s), s.slot, s.position, s.pending) for s in live)

    @staticmethod
    def _rows(logits: torch.Tensor, slots: list[int]) -> torch.Tensor:
        if slots == list(range(slots[0], slots[0] + len(slots))):
            return logits[slots[0]:slots[0] + len(slots)]  # the usual case after compaction: no gather
        return logits[torch.tensor(slots, device=logits.device)]

    def _sample_rows(self, seqs: list[_Seq], logits: torch.Tensor) -> None:
        params = [s.row for s in seqs]
        choice = sample(logits, params, [len(s.text.ids) for s in seqs], self.valid_vocab)
        tokens = choice.tokens.tolist()  # one conversion, not one tensor index per row
        if choice.logprobs is None:
            for s, token in zip(seqs, tokens):
                self._append(s, token, None)
            return
        chosen, top_ids, top_lps = choice.logprobs.tolist(), choice.top_ids.tolist(), choice.top_logprobs.tolist()
        for i, s in enumerate(seqs):
            k = params[i].logprobs or 0
            self._append(s, tokens[i], TokenLogprob(tokens[i], chosen[i], list(zip(top_ids[i][:k], top_lps[i][:k]))))

    def _beam_step(self, req: _Request, logits: torch.Tensor) -> None:
        beam = req.beam
        parents = beam.step(torch.log_softmax(logits.float(), dim=-1))
        seqs = req.seqs
        if beam.done:
            for s in seqs:
                s.finish_reason = "length"
            return
        # Beam i continues parent i's history: give its slot the parent's cache, then its new token.
        src = [seqs[p].slot for p in parents]
        dst = [seqs[i].slot for i in range(len(parents))]
        moved = [(a, b) for a, b in zip(src, dst) if a != b]
        if moved:
            self.decoder.copy_slots([a for a, _ in moved], [b for _, b in moved], seqs[0].position)
        for i, s in enumerate(seqs):
            if i < len(parents):
                s.pending = beam.beams[i].tokens[-1]
            else:
                s.finish_reason = "length"  # fewer candidates than beams (a tiny vocabulary): idle slot

    def _append(self, seq: _Seq, token: int, logprob: TokenLogprob | None) -> None:
        p = seq.req.params
        if token == self.eos_id and not p.ignore_eos:
            seq.finish_reason = "stop"
            return
        seq.text.append(token)
        seq.new_ids.append(token)
        if logprob is not None:
            seq.new_logprobs.append(logprob)
        if seq.text.stopped:
            seq.finish_reason = "stop"
        elif len(seq.text.ids) >= p.max_tokens or seq.position + 1 >= self.context_length:
            seq.finish_reason = "length"
        else:
            seq.pending = token

    def _finish_step(self) -> int:
        produced = 0
        now = time.time()
        for req in list(self._running):
            deltas = []
            if req.beam is None:
                for s in req.seqs:
                    if not s.new_ids and not s.finished:
                        continue
                    if s.finished:
                        s.text.flush()
                    text = s.text.take(final=s.finished)
                    produced += len(s.new_ids)
                    if s.new_ids or s.finished:
                        deltas.append(SequenceDelta(s.index, text, s.new_ids, s.new_logprobs, s.finish_reason))
                    s.new_ids, s.new_logprobs = [], []
                    if s.finished and s.slot >= 0:
                        self._slots[s.slot] = None
                        s.slot = -1
            elif req.finished:
                deltas = self._beam_results(req)
            if deltas and req.metrics.first_token is None:
                req.metrics.first_token = now
            if req.finished:
                req.metrics.finished = now
                req.metrics.completion_tokens = sum(len(s.text.ids) for s in req.seqs)
                self._release(req)
                self._running.remove(req)
            # Only the first output of a request carries the prompt's logprobs.
            first = req.prompt_logprobs
            req.prompt_logprobs = None
            if deltas or req.finished:
                req.emit(RequestOutput(req.id, deltas, req.finished, first, req.metrics if req.finished else None))
        return produced

    def _beam_results(self, req: _Request) -> list[SequenceDelta]:
        deltas = []
        for i, hyp in enumerate(req.beam.best(req.params.n)):
            state = TextState(self.tokenizer, req.params.stop)
            for t in hyp.tokens:
                state.append(t)
            state.flush()
            reason = "stop" if hyp.ended or state.stopped else "length"
            req.seqs[i].text = state
            deltas.append(SequenceDelta(i, state.take(final=True), list(hyp.tokens), [], reason))
        return deltas

    def _release(self, req: _Request) -> None:
        for s in req.seqs:
            if s.slot >= 0 and self._slots[s.slot] is s:
                self._slots[s.slot] = None
            s.slot = -1

    def _compact(self) -> None:
        """Move live sequences from the highest slots into the lowest free ones, so the decode batch (slots
        0..highest live) stays as small as the number of live sequences allows."""
        while True:
            live = [i for i, s in enumerate(self._slots) if s is not None]
            free = [i for i, s in enumerate(self._slots) if s is None]
            if not live or not free or free[0] > live[-1]:
                return
            src, dst = live[-1], free[0]
            seq = self._slots[src]
            self.decoder.copy_slots([src], [dst], seq.position)
            self._slots[dst], self._slots[src], seq.slot = seq, None, dst
