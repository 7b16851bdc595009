"""The generation engine: the step loop over the scheduler (scheduler.py), the paged KV cache's block manager
(block_manager.py) and the model runner (model_runner.py). Ray-free, HTTP-free.

Each `step()`:
1. takes the requests added and aborted since the last step (from any thread);
2. plans the next step (decodes, chunked prefills, admissions) and launches it on the device, its input
   tokens taken on the device from the step still in flight;
3. only then reads the step before: appends its tokens, detokenises, applies end-of-text, stop strings and
   max_tokens, hands each request its new text and frees finished sequences' blocks. That host work overlaps
   the device's work on the step just launched. Steps with beams or penalties are read at once (their next
   step depends on what the host makes of this one).

A request's randomness is keyed by its own seed and step (sampling.py), so what else is in the batch does not
change its output. A step that raises is retried request by request: a request that still fails alone is
failed, the others go on (recomputed from their tokens). `add_request` and `abort` may be called from any
thread; `step` from one.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from codemill.serve.beam import BeamSearch
from codemill.serve.block_manager import BlockManager
from codemill.serve.config import DEFAULT_BATCH_BUCKETS
from codemill.serve.decoder import Decoder
from codemill.serve.detok import TextState, token_bytes
from codemill.serve.model_runner import Launched, ModelRunner
from codemill.serve.sampling import RowParams, sequence_seed
from codemill.serve.scheduler import QueueFull, Scheduler
from codemill.serve.sequence import (
    Emit,
    GenerationParams,
    RequestMetrics,
    RequestOutput,
    Sequence,
    SequenceDelta,
    SequenceGroup,
    TokenLogprob,
)

__all__ = ["Engine", "GenerationParams", "QueueFull", "RequestMetrics", "RequestOutput", "SequenceDelta",
           "StepStats", "TokenLogprob"]

log = logging.getLogger("codemill.serve")


@dataclass
class StepStats:
    batch_size: int        # sequences decoded
    prefill_tokens: int
    seconds: float
    tokens: int            # tokens handed to requests by this step's reading
    free_blocks: int = 0
    running: int = 0
    waiting: int = 0


class Engine:
    def __init__(self, decoder: Decoder, tokenizer=None, *, eos_id: int | None = None, valid_vocab: int | None = None,
                 num_blocks: int, block_size: int = 16, max_num_seqs: int = 64, max_batched_tokens: int = 2048,
                 max_queue: int = 256, cuda_graphs: bool = True, graph_sizes: list[int] | None = None,
                 overlap: bool = True, on_step: Callable[[StepStats], None] | None = None):
        self.decoder, self.tokenizer, self.eos_id = decoder, tokenizer, eos_id
        self.token_table = token_bytes(tokenizer) if tokenizer is not None else None
        self.valid_vocab = min(valid_vocab or decoder.vocab_size, decoder.vocab_size)
        self.context_length = decoder.max_length
        self.block_size, self.max_num_seqs = block_size, max_num_seqs
        decoder.allocate_cache(num_blocks, block_size)
        self.blocks = BlockManager(num_blocks, block_size)
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max_batched_tokens, max_queue, self.context_length)
        self.runner = ModelRunner(decoder, block_size, max_num_seqs, graph_sizes or list(DEFAULT_BATCH_BUCKETS),
                                  cuda_graphs, self.valid_vocab)
        self.overlap, self.on_step = overlap, on_step
        self._inflight: Launched | None = None
        self._lock = threading.Lock()
        self._incoming: collections.deque[SequenceGroup] = collections.deque()
        self._aborted: set[str] = set()
        self._groups: dict[str, SequenceGroup] = {}
        self.failed_steps = 0

    # ------------------------------------------------------------ thread-safe API
    def add_request(self, request_id: str, prompt: list[int], params: GenerationParams, emit: Emit) -> None:
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if len(prompt) + params.max_tokens > self.context_length:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                             f"context length {self.context_length}")
        if params.num_seqs > self.max_num_seqs:
            raise ValueError(f"{params.num_seqs} sequences exceed max_num_seqs={self.max_num_seqs}")
        need = self.blocks.blocks_for(len(prompt) + max(params.max_tokens, 1)) * params.num_seqs
        if need > self.blocks.num_blocks - 1:
            raise ValueError(f"the request needs {need} KV-cache blocks; the cache has {self.blocks.num_blocks - 1}")
        group = self._group(request_id, list(prompt), params, emit)
        with self._lock:
            if len(self._incoming) + len(self.scheduler.waiting) >= self.scheduler.max_queue:
                raise QueueFull(f"{len(self._incoming) + len(self.scheduler.waiting)} requests are waiting "
                                f"(max_queue={self.scheduler.max_queue})")
            self._incoming.append(group)

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)

    def has_work(self) -> bool:
        with self._lock:
            incoming = bool(self._incoming or self._aborted)
        return incoming or self.scheduler.has_work() or self._inflight is not None

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    @property
    def num_running(self) -> int:
        return self.scheduler.num_running_seqs

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting) + len(self._incoming)

    def describe(self) -> dict:
        return {"kv_blocks": self.blocks.num_blocks, "block_size": self.block_size,
                "kv_cache_bytes": self.decoder.cache_bytes(), "max_num_seqs": self.max_num_seqs,
                "attention": self.decoder.attention, "cuda_graphs": sorted(self.runner.graphs)}

    def _group(self, rid: str, prompt: list[int], params: GenerationParams, emit: Emit) -> SequenceGroup:
        group = SequenceGroup(rid, prompt, params, emit, RequestMetrics(time.time(), prompt_tokens=len(prompt)))
        base_seed = params.seed if params.seed is not None else random.getrandbits(63)
        for i in range(params.num_seqs):
            # Sample i of a seeded request draws from its own stream, a function of (seed, i).
            seed = sequence_seed(base_seed, i)
            row = RowParams(params.temperature, params.top_k, params.top_p, seed, params.logprobs,
                            params.presence_penalty, params.frequency_penalty, params.logit_bias)
            text = TextState(self.tokenizer, params.stop, table=self.token_table)
            group.seqs.append(Sequence(group, i, seed, row, text, list(prompt)))
        if params.num_beams > 1:
            group.beam = BeamSearch(params.num_beams, params.max_tokens, params.length_penalty,
                                    None if params.ignore_eos else self.eos_id, self.valid_vocab)
        return group

    # ------------------------------------------------------------ the step
    def step(self) -> None:
        started = time.perf_counter()
        self._take_incoming()
        sched = self.scheduler.schedule()
        if sched.needs_sync:  # preemption waits until the step in flight is read
            self._read(self._inflight)
            self._inflight = None
            sched = self.scheduler.schedule()
        launched = None
        if not sched.empty:
            try:
                launched = self.runner.launch(sched, self._inflight)
            except Exception:
                log.exception("a step failed; retrying its requests one by one")
                self.failed_steps += 1
                self._isolate(sched)
        prev, self._inflight = self._inflight, launched
        produced = self._read(prev) if prev is not None else 0
        if launched is not None and (not self.overlap or any(g.needs_host_between_steps for g in sched.groups())):
            produced += self._read(launched)
            self._inflight = None
        if self.on_step:
            self.on_step(StepStats(len(sched.decodes), sum(c.length for c in sched.prefills),
                                   time.perf_counter() - started, produced, self.blocks.num_free,
                                   self.scheduler.num_running_seqs, len(self.scheduler.waiting)))

    def run_until_done(self) -> None:
        while self.has_work():
            self.step()

    def fail_all(self, message: str) -> None:
        """The last resort after a step raised outside the model (a bug): every request ends with an error."""
        self._inflight = None
        for g in list(self.scheduler.running) + list(self.scheduler.waiting):
            self._fail(g, message)
        with self._lock:
            incoming, self._incoming = list(self._incoming), collections.deque()
        for g in incoming:
            g.emit(RequestOutput(g.id, [], True, error=message))

    def _take_incoming(self) -> None:
        with self._lock:
            incoming, self._incoming = list(self._incoming), collections.deque()
            aborted, self._aborted = self._aborted, set()
        for g in incoming:
            if g.id in aborted:
                continue
            self.scheduler.waiting.append(g)  # the bound was checked in add_request
            self._groups[g.id] = g
        for rid in aborted:
            g = self._groups.pop(rid, None)
            if g is not None:
                g.aborted = True
                self.scheduler.remove(g)

    def _fail(self, g: SequenceGroup, message: str) -> None:
        g.aborted = True
        self.scheduler.remove(g)
        self._groups.pop(g.id, None)
        try:
            g.emit(RequestOutput(g.id, [], True, error=message))
        except Exception:
            log.exception("emit failed for %s", g.id)

    def _isolate(self, sched) -> None:
        """A step raised: read the step in flight, put every request of the failed step back to be recomputed,
        and run each alone once; one that fails alone is failed, the others go on."""
        if self._inflight is not None:
            self._read(self._inflight)
            self._inflight = None
        groups = [g for g in sched.groups() if not g.finished]
        for g in groups:
            for s in g.seqs:
                s.pending = 0  # the failed step's tokens were never produced
            if g in self.scheduler.running:
                self.scheduler.preempt(g)
        for g in groups:
            self.scheduler.waiting.remove(g)
            self.scheduler.waiting.appendleft(g)
            try:
                solo = self.scheduler.schedule(only=g)
                if not solo.empty:
                    self._read(self.runner.launch(solo, None))
            except Exception as exc:
                log.exception("request %s fails on its own", g.id)
                for s in g.seqs:
                    s.pending = 0
                self._fail(g, f"generation failed: {type(exc).__name__}")

    # ------------------------------------------------------------ reading a step
    def _read(self, launched: Launched) -> int:
        try:
            launched.read()
        except Exception:
            log.exception("reading a step failed")
            for g in launched.schedule.groups():
                self._fail(g, "generation failed on the device")
            return 0
        host, k = launched.host, launched.top_k
        touched: dict[int, SequenceGroup] = {}
        beam_rows: dict[int, list[int]] = {}
        for i, s in enumerate(launched.sampled):
            s.pending -= 1
            g = s.group
            touched[id(g)] = g
            if g.aborted or s.finished:  # g.finished, without its walk over the group's sequences per row
                continue  # ended (or aborted) while this step ran: its token is dropped
            if g.beam is not None:
                beam_rows.setdefault(id(g), []).append(i)
                continue
            row = host[i]
            token = int(row[0])
            lp = None  # the batch's rows carry logprobs when any request wants them; only those get them
            if g.params.logprobs is not None and len(row) > 1:
                lp = TokenLogprob(token, row[1], [(int(t), v) for t, v in zip(row[2:2 + k], row[2 + k:2 + 2 * k])][
                    :g.params.logprobs])
            try:
                self._append(s, token, lp)
            except Exception as exc:
                log.exception("request %s failed reading its token", g.id)
                self._fail(g, f"generation failed: {type(exc).__name__}")
        if launched.prompt_rows:
            self._read_prompt_logprobs(launched)
            for g, *_ in launched.prompt_rows:
                touched[id(g)] = g
        for c in launched.schedule.prefills:
            g = c.seq.group
            touched[id(g)] = g
            if g.params.max_tokens == 0 and c.start + c.length == len(g.prompt):
                for s in g.seqs:
                    s.finish_reason = "length"
        produced = 0
        for key, g in touched.items():
            if key in beam_rows and not g.finished:
                try:
                    self._beam_step(g, launched, beam_rows[key])
                except Exception as exc:
                    log.exception("request %s failed in beam search", g.id)
                    self._fail(g, f"generation failed: {type(exc).__name__}")
                    continue
            produced += self._emit(g)
        return produced

    def _read_prompt_logprobs(self, launched: Launched) -> None:
        rows = launched.prompt_packed.tolist()
        for g, start, _, n in launched.prompt_rows:
            # A request whose sampled token ended it in this very step (max_tokens 1, lm-eval's loglikelihood
            # request) still gets its prompt's logprobs: only an aborted or already answered one is skipped.
            if g.prompt_logprobs_sent or g.aborted:
                continue
            if g.prompt_logprobs is None:
                g.prompt_logprobs = [TokenLogprob(g.prompt[0], None, [])]
            want = g.params.logprobs or 0
            k = (len(rows[0]) - 1) // 2
            for j in range(n):
                pos = start + j + 1  # the prompt position this row predicts
                if pos >= len(g.prompt) or pos < len(g.prompt_logprobs):
                    continue
                r = rows[self._prompt_row_index(launched, g, start) + j]
                top = [(int(t), v) for t, v in zip(r[1:1 + k], r[1 + k:1 + 2 * k])][:want]
                g.prompt_logprobs.append(TokenLogprob(g.prompt[pos], r[0], top))

    @staticmethod
    def _prompt_row_index(launched: Launched, group: SequenceGroup, start: int) -> int:
        offset = 0
        for g, s, _, n in launched.prompt_rows:
            if g is group and s == start:
                return offset
            offset += n
        raise KeyError(start)

    def _beam_step(self, g: SequenceGroup, launched: Launched, rows: list[int]) -> None:
        """One step of beam search from the log-probabilities the runner kept for the group's rows: beam i
        continues parent i's history (a shared copy of its block table) with its new token."""
        beam, seqs = g.beam, g.seqs
        lps = launched.beam_logprobs[[launched.beam_index[r] for r in rows]]
        parents = beam.step(lps[:1] if not beam.beams else lps[:len(beam.beams)])
        if beam.done:
            for s in seqs:
                s.finish_reason = s.finish_reason or "length"
            return
        length = seqs[0].num_computed
        tables = [self.blocks.fork(seqs[p].block_table) for p in parents]
        for s in seqs:
            self.blocks.release(s.block_table)
        for i, s in enumerate(seqs):
            if i < len(parents):
                s.block_table = tables[i]
                s.tokens = g.prompt + list(beam.beams[i].tokens)
                s.num_computed = length
            else:
                s.finish_reason = "length"  # fewer candidates than beams (a tiny vocabulary): idle

    def _append(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> None:
        p = seq.group.params
        seq.tokens.append(token)
        if token == self.eos_id and not p.ignore_eos:
            seq.finish_reason = "stop"
            if logprob is not None:  # scored like any token (lm-eval reads it), though it adds no text
                seq.new_logprobs.append(logprob)
            return
        seq.text.append(token)
        seq.new_ids.append(token)
        if logprob is not None:
            seq.new_logprobs.append(logprob)
        if seq.text.stopped:
            seq.finish_reason = "stop"
        elif seq.num_generated - seq.pending >= p.max_tokens or len(seq.tokens) >= self.context_length:
            seq.finish_reason = "length"

    def _emit(self, g: SequenceGroup) -> int:
        if g.aborted:
            return 0
        produced = 0
        deltas = []
        if g.beam is None or g.finished:
            if g.beam is not None:
                deltas = self._beam_results(g)
            else:
                for s in g.seqs:
                    if not s.new_ids and not s.new_logprobs and not s.finished:
                        continue
                    if s.finished:
                        s.text.flush()
                    text = s.text.take(final=s.finished)
                    produced += len(s.new_ids)
                    if s.new_ids or s.new_logprobs or (s.finished and not getattr(s, "_ended", False)):
                        deltas.append(SequenceDelta(s.index, text, s.new_ids, s.new_logprobs,
                                                    s.finish_reason if s.finished else None))
                    if s.finished:
                        s._ended = True
                    s.new_ids, s.new_logprobs = [], []
        first = None
        if g.prompt_logprobs is not None and not g.prompt_logprobs_sent and len(g.prompt_logprobs) == len(g.prompt):
            first, g.prompt_logprobs_sent = g.prompt_logprobs, True
        now = time.time()
        if g.metrics.admitted is None:
            g.metrics.admitted = now
        if (deltas or first) and g.metrics.first_token is None:
            g.metrics.first_token = now
        finished = g.finished
        if finished:
            g.metrics.finished = now
            g.metrics.completion_tokens = sum(len(s.text.ids) for s in g.seqs)
            self.scheduler.remove(g)
            self._groups.pop(g.id, None)
        if deltas or finished or first:
            try:
                g.emit(RequestOutput(g.id, deltas, finished, first, g.metrics if finished else None))
            except Exception:
                log.exception("emit failed for %s", g.id)
        return produced

    def _beam_results(self, g: SequenceGroup) -> list[SequenceDelta]:
        deltas = []
        for i, hyp in enumerate(g.beam.best(g.params.n)):
            state = TextState(self.tokenizer, g.params.stop, table=self.token_table)
            for t in hyp.tokens:
                state.append(t)
            state.flush()
            reason = "stop" if hyp.ended or state.stopped else "length"
            g.seqs[i].text = state
            deltas.append(SequenceDelta(i, state.take(final=True), list(hyp.tokens), [], reason))
        return deltas
