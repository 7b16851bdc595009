"""Runs the decode step at fixed shapes: the batch padded to a bucket of slots, the attention to a bucket of
KV length. On a GPU each (batch, length) bucket is captured once as a CUDA graph, so a decode step is one
graph launch plus two small copies, whatever the layer count (kernel-launch overhead would otherwise
dominate batch-1 decoding); on a CPU the same step runs eagerly.
"""

from __future__ import annotations

import bisect
import logging

import torch

from codemill.serve.decoder import Decoder

log = logging.getLogger("codemill.serve")


def buckets_up_to(buckets: list[int] | tuple[int, ...], limit: int) -> list[int]:
    """The buckets below `limit`, then `limit` itself: every size up to `limit` has a bucket."""
    return [b for b in buckets if b < limit] + [limit]


class DecodeRunner:
    def __init__(self, decoder: Decoder, batch_buckets: list[int], length_buckets: list[int], cuda_graphs: bool):
        self.decoder = decoder
        self.batch_buckets = buckets_up_to(batch_buckets, decoder.max_slots)
        self.length_buckets = buckets_up_to(length_buckets, decoder.max_length)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.use_graphs = cuda_graphs and decoder.device.type == "cuda"
        n = self.batch_buckets[-1]
        self.inputs = torch.zeros(2, n, dtype=torch.long, device=decoder.device)  # tokens, positions
        self.staging = torch.zeros(2, n, dtype=torch.long, pin_memory=self.use_graphs)
        if self.use_graphs:
            self.capture()

    def batch_bucket(self, rows: int) -> int:
        return self.batch_buckets[bisect.bisect_left(self.batch_buckets, rows)]

    def length_bucket(self, length: int, rows: int = 0) -> int:
        if rows and rows <= self.decoder.fused_rows:
            return self.length_buckets[-1]  # the fused kernels attend up to each row's position: one graph
        return self.length_buckets[bisect.bisect_left(self.length_buckets, length)]

    @torch.inference_mode()
    def capture(self) -> None:
        pool = torch.cuda.graph_pool_handle()
        self.inputs.zero_()
        # Capture the largest shapes first so the shared pool is sized once.
        for b in reversed(self.batch_buckets):
            for length in reversed(self.length_buckets[-1:] if b <= self.decoder.fused_rows else self.length_buckets):
                tokens, positions = self.inputs[0, :b], self.inputs[1, :b]
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    self.decoder.decode(tokens, positions, length)  # warm-up: allocator and cuBLAS handles
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = self.decoder.decode(tokens, positions, length)
                self.graphs[(b, length)] = (graph, out)
        torch.cuda.synchronize()
        log.info("decode step captured as %d CUDA graphs (batch %s x length %s)", len(self.graphs),
                 self.batch_buckets, self.length_buckets)

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """The next step fed from the device: tokens [rows] (a device tensor, e.g. the last step's argmax) at
        the given positions, without waiting for the host to read them -> logits, as `__call__`."""
        rows = tokens.shape[0]
        b = self.batch_bucket(rows)
        self.inputs[0, :rows].copy_(tokens)
        self.inputs[1, :rows] += 1
        length = self.length_bucket(max(positions) + 1, b)
        if self.use_graphs:
            graph, out = self.graphs[(b, length)]
            graph.replay()
            return out
        return self.decoder.decode(self.inputs[0, :b], self.inputs[1, :b], length)

    @torch.inference_mode()
    def __call__(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """Feed tokens[i] at positions[i] to slot i (slots past len(tokens) get a harmless dummy) -> logits of
        the bucket's rows [bucket, vocab]; rows ≥ len(tokens) are meaningless."""
        rows = len(tokens)
        b = self.batch_bucket(rows)
        length = self.length_bucket(max(positions) + 1, b)
        self.staging[:, :b].zero_()
        self.staging[0, :rows] = torch.tensor(tokens, dtype=torch.long)
        self.staging[1, :rows] = torch.tensor(positions, dtype=torch.long)
        self.inputs[:, :b].copy_(self.staging[:, :b], non_blocking=self.use_graphs)
        if self.use_graphs:
            graph, out = self.graphs[(b, length)]
            graph.replay()
            return out
        return self.decoder.decode(self.inputs[0, :b], self.inputs[1, :b], length)
