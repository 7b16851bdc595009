"""Runs a scheduled step on the device: builds the flat batch, runs the forward (a captured CUDA graph for a
decode-only batch up to the largest graph size, eagerly otherwise), samples on the device, and starts copying
the results to the host without waiting for them.

A decode row whose input token was sampled by the step before (still in flight, not read by the host) takes
it from that step's device tensor: the engine launches step N+1 before it reads step N, so the host's work on
step N overlaps the device's on step N+1.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

import torch

from codemill.serve.decoder import Decoder, ForwardBatch, PrefillChunk
from codemill.serve.sampling import sample
from codemill.serve.scheduler import Schedule
from codemill.serve.sequence import Sequence
from codemill.serve.transfer import to_device

log = logging.getLogger("codemill.serve")


@dataclass
class Launched:
    """A step whose work is queued on the device; `read()` waits for its results on the host."""

    schedule: Schedule
    sampled: list[Sequence]               # row i of `tokens` is sampled[i]'s next token
    tokens: torch.Tensor                  # [S] on the device
    packed: torch.Tensor | None           # on the host (pinned on a GPU): tokens, logprobs, top ids/logprobs
    top_k: int
    done: torch.cuda.Event | None
    prompt_rows: list[tuple[object, int, int, int]] = field(default_factory=list)  # (group, chunk start, row0, n)
    prompt_packed: torch.Tensor | None = None
    beam_logprobs: torch.Tensor | None = None   # [rows of beam requests, vocab] (read at once, never in flight)
    beam_index: dict[int, int] = field(default_factory=dict)  # sampled row -> its row in beam_logprobs
    host: list | None = None

    def read(self) -> None:
        if self.host is None:
            if self.done is not None:
                self.done.synchronize()
            self.host = self.packed.tolist() if self.packed is not None else []


def _index(values: list[int], device: torch.device) -> torch.Tensor:
    """Row indices as a long tensor: `torch.tensor([])` would be float, which no tensor can be indexed with (a
    step of partial prefill chunks alone wants no logits)."""
    return to_device(values, torch.long, device)


def _pinned(t: torch.Tensor, use: bool) -> torch.Tensor:
    if not use:
        return t.cpu()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    return out


class ModelRunner:
    def __init__(self, decoder: Decoder, block_size: int, max_num_seqs: int, graph_sizes: list[int],
                 cuda_graphs: bool, valid_vocab: int):
        self.decoder, self.block_size, self.valid_vocab = decoder, block_size, valid_vocab
        self.device = decoder.device
        self.table_width = -(-decoder.max_length // block_size)
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self.graph_sizes = sorted({min(b, max_num_seqs) for b in graph_sizes})
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pinned = self.device.type == "cuda"
        if self.use_graphs:
            n = self.graph_sizes[-1]
            dev = self.device
            self.static = {"input_ids": torch.zeros(n, dtype=torch.long, device=dev),
                           "positions": torch.zeros(n, dtype=torch.long, device=dev),
                           "slots": torch.zeros(n, dtype=torch.long, device=dev),
                           "block_tables": torch.zeros(n, self.table_width, dtype=torch.int32, device=dev),
                           "context_lens": torch.ones(n, dtype=torch.int32, device=dev)}
            self.capture()

    # ------------------------------------------------------------ CUDA graphs of the decode step
    def _static_batch(self, b: int) -> ForwardBatch:
        s = self.static
        return ForwardBatch(s["input_ids"][:b], s["positions"][:b], s["slots"][:b], b, s["block_tables"][:b],
                            s["context_lens"][:b], [])

    @torch.inference_mode()
    def capture(self) -> None:
        pool = torch.cuda.graph_pool_handle()
        for b in reversed(self.graph_sizes):  # largest first: the shared pool is sized once
            batch = self._static_batch(b)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.decoder.forward(batch)  # warm-up: allocator, cuBLAS handles, Triton autotuning
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = self.decoder.forward(batch)
            self.graphs[b] = (graph, out)
        torch.cuda.synchronize()
        log.info("decode step captured as %d CUDA graphs (batch sizes %s)", len(self.graphs), self.graph_sizes)

    def graph_size(self, rows: int) -> int | None:
        i = bisect.bisect_left(self.graph_sizes, rows)
        return self.graph_sizes[i] if i < len(self.graph_sizes) else None

    # ------------------------------------------------------------ one step
    def _slot(self, table: list[int], position: int) -> int:
        return table[position // self.block_size] * self.block_size + position % self.block_size

    @torch.inference_mode()
    def launch(self, sched: Schedule, prev: Launched | None) -> Launched:
        dev, bs = self.device, self.block_size
        if sched.copies:
            self.decoder.copy_blocks([a for a, _ in sched.copies], [b for _, b in sched.copies])
        ids, positions, slots = [], [], []
        from_prev_rows, from_prev_src = [], []
        prev_rows = {id(s): i for i, s in enumerate(prev.sampled)} if prev is not None else {}
        for row, c in enumerate(sched.decodes):
            s = c.seq
            if c.start < len(s.tokens):
                ids.append(s.tokens[c.start])
            else:  # sampled by the step in flight: taken from its device tensor below
                ids.append(0)
                from_prev_rows.append(row)
                from_prev_src.append(prev_rows[id(s)])
            positions.append(c.start)
            slots.append(self._slot(s.block_table, c.start))
        d = len(sched.decodes)
        chunks: list[PrefillChunk] = []
        for c in sched.prefills:
            s = c.seq
            chunks.append(PrefillChunk(len(ids), c.length, c.start, to_device(
                s.block_table[:-(-(c.start + c.length) // bs)], torch.long, dev)))
            ids.extend(s.tokens[c.start:c.start + c.length])
            positions.extend(range(c.start, c.start + c.length))
            slots.extend(self._slot(s.block_table, p) for p in range(c.start, c.start + c.length))
        # The rows whose logits are needed: every decode row, the last row of a prefill chunk that samples,
        # every row of a chunk whose request wants its prompt's logprobs.
        logit_rows: list[int] = list(range(d))
        sample_rows: list[int] = list(range(d))
        sampled: list[Sequence] = [c.seq for c in sched.decodes]
        prompt_rows = []
        for chunk, c in zip(chunks, sched.prefills):
            g = c.seq.group
            if g.params.prompt_logprobs and not g.prompt_logprobs_sent and c.start < len(g.prompt):
                prompt_rows.append((c.seq.group, c.start, len(logit_rows), c.length))
                logit_rows.extend(range(chunk.flat_start, chunk.flat_start + c.length))
            if c.samples:
                if not (prompt_rows and prompt_rows[-1][0] is c.seq.group and prompt_rows[-1][1] == c.start):
                    logit_rows.append(chunk.flat_start + c.length - 1)
                for x in c.samples:
                    sample_rows.append(len(logit_rows) - 1)
                    sampled.append(x)
        graph = self.graph_size(d) if self.use_graphs and not chunks else None
        if graph is not None:
            logits = self._replay(graph, ids, positions, slots, sched, from_prev_rows, from_prev_src, prev)[:d]
        else:
            input_ids = torch.tensor(ids, dtype=torch.long).to(dev, non_blocking=True)
            if from_prev_rows:
                input_ids[_index(from_prev_rows, dev)] = prev.tokens[_index(from_prev_src, dev)]
            tables, lens = self._tables(sched)
            batch = ForwardBatch(input_ids, torch.tensor(positions, dtype=torch.long).to(dev, non_blocking=True),
                                 torch.tensor(slots, dtype=torch.long).to(dev, non_blocking=True), d,
                                 tables.to(dev, non_blocking=True), lens.to(dev, non_blocking=True), chunks,
                                 None if len(logit_rows) == len(ids) else _index(logit_rows, dev))
            logits = self.decoder.forward(batch)
        return self._sample(sched, logits, sample_rows, sampled, prompt_rows)

    def _tables(self, sched: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
        # As wide as the batch's longest table, built as one tensor: a copy per row, or padding every row to
        # the full context's width, costs more host time than the step's GPU work at hundreds of rows.
        block_tables = [c.seq.block_table for c in sched.decodes]
        w = max(map(len, block_tables), default=1)
        tables = torch.tensor([t + [0] * (w - len(t)) for t in block_tables], dtype=torch.int32) if block_tables \
            else torch.zeros(0, w, dtype=torch.int32)
        lens = torch.tensor([c.start + 1 for c in sched.decodes], dtype=torch.int32)
        return tables, lens

    def _replay(self, b: int, ids, positions, slots, sched, from_prev_rows, from_prev_src, prev) -> torch.Tensor:
        s, d = self.static, len(ids)
        tables, lens = self._tables(sched)
        pad = b - d
        host = {"input_ids": torch.tensor(ids + [0] * pad), "positions": torch.tensor(positions + [0] * pad),
                "slots": torch.tensor(slots + [0] * pad),  # padding rows write into the null block
                "context_lens": torch.cat([lens, torch.ones(pad, dtype=torch.int32)])}
        for name, value in host.items():
            s[name][:b].copy_(_pinned(value, True), non_blocking=True)
        # Only the columns this batch uses: a row reads the pages of its own context alone, so what an earlier,
        # longer batch left in the columns past them is never read (a stale id is still a valid block).
        w = tables.shape[1]
        s["block_tables"][:b, :w].copy_(_pinned(torch.cat([tables, torch.zeros(pad, w, dtype=torch.int32)]), True),
                                        non_blocking=True)
        if from_prev_rows:
            s["input_ids"][_index(from_prev_rows, self.device)] = prev.tokens[_index(from_prev_src, self.device)]
        graph, out = self.graphs[b]
        graph.replay()
        return out

    def _sample(self, sched: Schedule, logits: torch.Tensor, sample_rows: list[int], sampled: list[Sequence],
                prompt_rows: list) -> Launched:
        dev = self.device
        params = [x.row for x in sampled]
        k = max((p.logprobs for p in params if p.logprobs is not None), default=None)
        packed, tokens = None, torch.zeros(0, dtype=torch.long, device=dev)
        if sampled:
            rows = logits if sample_rows == list(range(len(sample_rows))) and len(sample_rows) == logits.shape[0] \
                else logits[_index(sample_rows, dev)]
            steps = [x.num_generated - 1 for x in sampled]
            outputs = [x.outputs() for x in sampled] if any(p.adjusts_logits for p in params) else None
            choice = sample(rows, params, steps, self.valid_vocab, outputs)
            tokens = choice.tokens
            parts = [tokens[:, None].float()]
            if choice.logprobs is not None:
                parts += [choice.logprobs[:, None], choice.top_ids.float(), choice.top_logprobs]
            packed = _pinned(torch.cat(parts, dim=1), self.pinned)
        prompt_packed = None
        if prompt_rows:
            want = max(max((g.params.logprobs or 0) for g, *_ in prompt_rows), 1)
            parts = []
            for g, start, row0, n in prompt_rows:
                lp = torch.log_softmax(logits[row0:row0 + n].float(), dim=-1)
                nxt = g.prompt[start + 1:start + n + 1]  # the prompt token each row predicts (the last may not)
                ids = _index(nxt + [0] * (n - len(nxt)), dev)
                chosen = lp.gather(1, ids[:, None])
                top = torch.topk(lp[:, :self.valid_vocab], want, dim=-1)
                parts.append(torch.cat([chosen, top.indices.float(), top.values], dim=1))
            prompt_packed = _pinned(torch.cat(parts), self.pinned)
        beam_rows = [i for i, x in enumerate(sampled) if x.group.beam is not None]
        beam_logprobs, beam_index = None, {}
        if beam_rows:
            picked = logits[_index([sample_rows[i] for i in beam_rows], dev)]
            beam_logprobs = torch.log_softmax(picked.float(), dim=-1)
            beam_index = {r: j for j, r in enumerate(beam_rows)}
        done = None
        if self.pinned:
            done = torch.cuda.Event()
            done.record()
        return Launched(sched, sampled, tokens, packed, k or 0, done, prompt_rows, prompt_packed, beam_logprobs,
                        beam_index)
