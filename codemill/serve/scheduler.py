"""Which tokens each engine step runs: the waiting and running queues over the block manager.

Every step, within a budget of `max_batched_tokens`:
1. every running sequence past its prompt decodes one token (decodes first: a long prompt never stalls the
   streams); when the cache has no block for one, the newest running request is preempted (its blocks freed,
   back to the front of the queue, recomputed later) until it has;
2. prompts being prefilled continue in chunks with the budget left (chunked prefill, mixed into the decode
   step), then waiting requests are admitted in order while sequences and blocks allow.

A sequence's first prefill chunk that reaches the end of its prompt samples every sequence of the request
from its last position, and the others take shared copies of its block table there (n samples and beams
share the prompt's blocks). The scheduler advances each sequence's `num_computed` and `pending` as it plans
a step, as if the step ran: the engine runs it before the host has read the previous step's tokens.
Pure Python: testable without a model.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from codemill.serve.block_manager import BlockManager
from codemill.serve.sequence import Sequence, SequenceGroup


class QueueFull(RuntimeError):
    """The bounded queue of waiting requests is full (HTTP 503)."""


@dataclass
class ScheduledChunk:
    seq: Sequence
    start: int                 # its first position
    length: int                # 1 for a decode
    samples: list[Sequence]    # the sequences sampled from its last position (none: a partial prefill)


@dataclass
class Schedule:
    decodes: list[ScheduledChunk] = field(default_factory=list)
    prefills: list[ScheduledChunk] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)   # (source block, new block) before the step
    needs_sync: bool = False   # preemption must wait for the step in flight: read it first, then schedule again

    @property
    def empty(self) -> bool:
        return not self.decodes and not self.prefills

    @property
    def num_tokens(self) -> int:
        return len(self.decodes) + sum(c.length for c in self.prefills)

    def groups(self) -> list[SequenceGroup]:
        seen: dict[int, SequenceGroup] = {}
        for c in self.decodes + self.prefills:
            seen.setdefault(id(c.seq.group), c.seq.group)
        return list(seen.values())


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_batched_tokens: int, max_queue: int,
                 max_length: int):
        self.blocks, self.max_num_seqs, self.max_batched_tokens = blocks, max_num_seqs, max_batched_tokens
        self.max_queue, self.max_length = max_queue, max_length
        self.waiting: collections.deque[SequenceGroup] = collections.deque()
        self.running: list[SequenceGroup] = []
        self.preemptions = 0

    # ------------------------------------------------------------ queues
    def add(self, group: SequenceGroup) -> None:
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(f"{len(self.waiting)} requests are waiting (max_queue={self.max_queue})")
        self.waiting.append(group)

    def remove(self, group: SequenceGroup) -> None:
        """Out of the queues, its blocks freed (finished, aborted or failed)."""
        if group in self.running:
            self.running.remove(group)
        elif group in self.waiting:
            self.waiting.remove(group)
        for s in group.seqs:
            self.blocks.release(s.block_table)

    @property
    def num_running_seqs(self) -> int:
        return sum(len(g.live()) if g.forked else g.params.num_seqs for g in self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def preempt(self, group: SequenceGroup) -> None:
        """Free the group's blocks and queue it first, to be recomputed: a forked group's sequences each
        prefill their own tokens (prompt and outputs) again. Its tokens must all have been read."""
        self.running.remove(group)
        for s in group.seqs:
            self.blocks.release(s.block_table)
            s.num_computed = 0
        self.waiting.appendleft(group)
        self.preemptions += 1

    # ------------------------------------------------------------ the plan of one step
    def schedule(self, only: SequenceGroup | None = None) -> Schedule:
        """The next step's work (`only`: that group's alone, admitted if it waits)."""
        sched = Schedule()
        running = [g for g in self.running if only is None or g is only]
        decoding = [s for g in running if not self._waits_for_host(g) for s in g.live()
                    if not s.in_prefill and self._may_decode(s)]
        # Capacity first, before anything changes: each decode may need a new block and a copy of a shared one
        # (most need neither: one row in block_size starts a block).
        needs = [self._decode_blocks(s) for s in decoding]
        while not self.blocks.can_allocate(sum(needs)):
            victim = self._victim(running)
            if victim is None:
                break  # nothing left to preempt: decode what fits
            if any(s.pending for s in victim.seqs):
                sched.needs_sync = True
                return sched
            self.preempt(victim)
            running.remove(victim)
            decoding = [s for s in decoding if s.group is not victim]
            needs = [self._decode_blocks(s) for s in decoding]
        budget = self.max_batched_tokens
        decodes = sched.decodes
        for s, need in zip(decoding, needs):
            if budget == 0:
                break
            if need:
                if not self.blocks.can_allocate(need):
                    continue
                self.blocks.grow(s.block_table, s.num_computed + 1)
                copy = self.blocks.prepare_write(s.block_table, s.num_computed)
                if copy:
                    sched.copies.append(copy)
            decodes.append(ScheduledChunk(s, s.num_computed, 1, [s]))
            s.num_computed += 1
            s.pending += 1
            budget -= 1
        for g in running:
            budget = self._prefill(g, budget, sched)
        running_seqs = self.num_running_seqs  # counted once: per admission it would cost O(running) each
        while self.waiting and budget > 0 and (only is None or self.waiting[0] is only):
            g = self.waiting[0]
            seqs = g.params.num_seqs if not g.forked else len(g.live())
            if running_seqs + seqs > self.max_num_seqs:
                break
            prompt_blocks = sum(self.blocks.blocks_for(s.length + 1) for s in (g.live() or g.seqs[:1]))
            if not self.blocks.can_allocate(prompt_blocks):
                break
            self.waiting.popleft()
            self.running.append(g)
            running_seqs += seqs
            budget = self._prefill(g, budget, sched)
        return sched

    def _prefill(self, g: SequenceGroup, budget: int, sched: Schedule) -> int:
        for s in g.live():
            if budget <= 0 or not s.in_prefill:
                continue
            end = min(s.length, s.num_computed + budget)
            if not self.blocks.can_allocate(self.blocks.blocks_for(end) - len(s.block_table)):
                return 0  # wait for blocks to free: prefills never preempt
            self.blocks.grow(s.block_table, end)
            samples: list[Sequence] = []
            if end == s.length and g.params.max_tokens > 0:
                samples = [s]
                if not g.forked:  # the prompt is in: every sequence of the request starts from it
                    for other in g.seqs[1:]:
                        other.block_table = self.blocks.fork(s.block_table)
                        other.num_computed = end
                    samples = list(g.seqs)
                    g.forked = True
            sched.prefills.append(ScheduledChunk(s, s.num_computed, end - s.num_computed, samples))
            budget -= end - s.num_computed
            s.num_computed = end
            for x in samples:
                x.pending += 1
        return budget

    def _decode_blocks(self, s: Sequence) -> int:
        pos = s.num_computed
        grow = self.blocks.blocks_for(pos + 1) - len(s.block_table)
        shared = grow <= 0 and self.blocks.refs(s.block_table[pos // self.blocks.block_size]) > 1
        return max(grow, 0) + int(shared)

    def _may_decode(self, s: Sequence) -> bool:
        """Not past max_tokens or the context (its last token, maybe still in flight, ends it)."""
        return s.num_generated < s.group.params.max_tokens and s.length < self.max_length

    @staticmethod
    def _waits_for_host(g: SequenceGroup) -> bool:
        return g.needs_host_between_steps and any(s.pending for s in g.seqs)

    def _victim(self, running: list[SequenceGroup]) -> SequenceGroup | None:
        """The newest running request, if another runs (the oldest keeps going, so one always finishes)."""
        return running[-1] if len(running) > 1 else None
