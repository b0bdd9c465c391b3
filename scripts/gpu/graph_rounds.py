"""Variants captured as CUDA graphs and timed in interleaved rounds (GPU): each round replays every variant's graph in
turn, so a variant is compared with its neighbours in time; the card's speed drifts more between runs than between
neighbouring replays. Used by bench_four_bit_sequence.py and bench_decode_attention.py."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

REPLAYS = 10


class GraphVariant:
    """`capture()` run once eagerly (copies of its outputs kept in `outs`: another variant may write the same
    buffers), then captured once as a CUDA graph."""

    def __init__(self, label: str, capture: Callable[[], list[torch.Tensor]]):
        self.label = label
        self.outs = [out.clone() for out in capture()]  # eager, before capture: compiles, and checks the launches
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            capture()
        self.times: list[float] = []

    def time(self) -> None:
        """One round: ms per replay over REPLAYS replays, after one to warm up."""
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.graph.replay()
        start.record()
        for _ in range(REPLAYS):
            self.graph.replay()
        end.record()
        torch.cuda.synchronize()
        self.times.append(start.elapsed_time(end) / REPLAYS)

    def paired(self, base: GraphVariant) -> float:
        """The median over rounds of this variant's time over `base`'s in the same round."""
        return statistics.median(t / b for t, b in zip(self.times, base.times, strict=True))


def timed_in_rounds(variants: list[GraphVariant], rounds: int) -> None:
    for _ in range(rounds):
        for variant in variants:
            variant.time()
