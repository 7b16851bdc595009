"""The paged KV cache's bookkeeping: fixed-size blocks of cache positions, handed to sequences as they grow.

A sequence's block table lists the blocks holding its positions 0, 1, ... in order (position p lives in
block table[p // block_size] at offset p % block_size). Blocks are reference-counted: the `n` samples of a
request, or the beams of a beam search, share the prompt's blocks after one prefill (`fork`), and a shared
block is copied before it is written (`prepare_write`), so one sequence never changes another's history.
Block 0 is never handed out: padding rows of a captured decode step write there. Pure Python, no torch.
"""

from __future__ import annotations

import collections

NULL_BLOCK = 0


class OutOfBlocks(RuntimeError):
    """No free block is left (the scheduler checks `can_allocate` first; this means a bookkeeping bug)."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks (one is reserved), got {num_blocks}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free = collections.deque(range(1, num_blocks))
        self._refs = [0] * num_blocks

    @property
    def num_free(self) -> int:
        return len(self._free)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def can_allocate(self, blocks: int) -> bool:
        return blocks <= len(self._free)

    def _take(self) -> int:
        if not self._free:
            raise OutOfBlocks("no free KV-cache block")
        block = self._free.popleft()
        self._refs[block] = 1
        return block

    def grow(self, table: list[int], tokens: int) -> int:
        """Append blocks to `table` until it holds `tokens` positions; returns how many it took."""
        need = self.blocks_for(tokens) - len(table)
        if need > len(self._free):
            raise OutOfBlocks(f"{need} blocks needed, {len(self._free)} free")
        for _ in range(max(need, 0)):
            table.append(self._take())
        return max(need, 0)

    def fork(self, table: list[int]) -> list[int]:
        """A new table sharing every block of `table` (n samples or beams after one prefill)."""
        for block in table:
            self._refs[block] += 1
        return list(table)

    def prepare_write(self, table: list[int], position: int) -> tuple[int, int] | None:
        """Before writing `position`: if its block is shared, give this table a private copy and return
        (source block, new block) for the cache copy; None when the block is this table's alone."""
        i = position // self.block_size
        block = table[i]
        if self._refs[block] == 1:
            return None
        fresh = self._take()
        self._refs[block] -= 1
        table[i] = fresh
        return block, fresh

    def release(self, table: list[int]) -> None:
        for block in table:
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free.append(block)
            elif self._refs[block] < 0:
                raise RuntimeError(f"block {block} released more often than taken")
        table.clear()

    def refs(self, block: int) -> int:
        return self._refs[block]
