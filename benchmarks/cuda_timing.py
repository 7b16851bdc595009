"""GPU time of a captured CUDA graph, read with CUDA events: what the decode benchmarks report per step."""

from __future__ import annotations

import torch


def capture(fn) -> torch.cuda.CUDAGraph:
    """fn captured as a graph, after three eager calls on a side stream (allocations and autotuning first)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def replay_ms(graph: torch.cuda.CUDAGraph, reps: int = 100, warmup: int = 5) -> float:
    """Milliseconds per replay, back to back on the current stream."""
    for _ in range(warmup):
        graph.replay()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / reps
