"""The decode step over KV slots, replayed from a captured CUDA graph per batch size on CUDA.

The reference spends most of each token launching kernels one by one from Python (on an H100 it reached ~6%
of the weight-read bound, docs/BENCHMARKS.md). Capturing the step once per batch-size bucket and replaying it
removes that overhead; elsewhere the step runs eagerly.
"""

from __future__ import annotations

from typing import Any

import torch

from ..kernels import programmatic_launch
from .kv_slots import KVSlots, bucket
from .linears import DecodeLinears
from .step import DecodeStep


class DecodeGraphs:
    """KV slots plus the step; `run(count)` advances slots 0..count-1 by one token each."""

    def __init__(
        self, model: Any, max_batch: int, use_graphs: bool, kernels: bool | None = None, deterministic: bool = False
    ) -> None:
        text = model.model.text_model
        config = text.config
        self.max_batch = max_batch
        self.use_graphs = use_graphs and model.device.type == "cuda"
        self.device = model.device
        self.sliding_window = getattr(config, "sliding_window", None)
        self.step = DecodeStep(model, max_batch, kernels, deterministic)
        self.cache = KVSlots(
            len(text.layers),
            self.step.kv_heads,
            self.step.head_dim,
            max_batch,
            text.embed_tokens.weight.dtype,
            self.device,
        )
        self.tokens = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool: Any = None

    @property
    def fused(self) -> bool:
        return self.step.fused

    @property
    def linears(self) -> DecodeLinears:
        return self.step.linears

    @property
    def length(self) -> int:
        return self.cache.length

    @property
    def mask(self) -> torch.Tensor:
        return self.cache.mask

    def supports(self, total_tokens: int) -> bool:
        """Whether a sequence of this many tokens stays within what the step computes exactly."""
        return self.sliding_window is None or total_tokens <= int(self.sliding_window)

    def ensure(self, slots: int, length: int) -> None:
        """Grows the cache to at least `slots` rows of `length` positions, keeping what is stored."""
        if self.cache.ensure(slots, length):
            self._drop_graphs()

    def release(self) -> None:
        """Frees the cache and graphs (when no sequence is running) so idle memory is the model's alone."""
        self.cache.release()
        self._drop_graphs()

    def store_prefill(self, slot: int, cache: Any, length: int, row: int = 0) -> None:
        self.cache.store_prefill(slot, cache, length, row)

    def store_prefills(self, first_slot: int, cache: Any, rows: list[int], lengths: list[int]) -> None:
        self.cache.store_prefills(first_slot, cache, rows, lengths)

    def move(self, source: int, target: int) -> None:
        self.cache.move(source, target)

    def park(self, first: int, count: int) -> None:
        """Points unused rows first..count-1 at position 0 of their own slot, so a padded step touches nothing live."""
        if first < count:
            self.tokens[first:count] = 0
            self.positions[first:count] = 0
            self.cache.mask[first:count] = False
            self.cache.mask[first:count, :, :, 0] = True

    def decode_one_token(self, size: int) -> torch.Tensor:
        """The step for rows 0..size-1, run eagerly."""
        with torch.inference_mode():
            return self.step.decode_one_token(self.cache, self.tokens, self.positions, size)

    def run(self, count: int) -> torch.Tensor:
        """One step for rows 0..count-1 (tokens/positions set by the caller); float32 logits of shape [count, V]."""
        size = bucket(count, self.cache.slots)
        self.park(count, size)
        if not self.use_graphs:
            return self.decode_one_token(size)[:count]
        captured = self._graphs.get(size)
        if captured is None:
            captured = self._capture(size)
        graph, logits = captured
        graph.replay()
        return logits[:count]

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        # Warm-up and capture run the step on the live buffers: they write the same K/V the replay below
        # writes, at the positions the caller has set, so nothing stored is disturbed.
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), programmatic_launch.decode_graph():
            self.decode_one_token(size)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool), programmatic_launch.decode_graph():
            logits = self.step.decode_one_token(self.cache, self.tokens, self.positions, size)
        self._graphs[size] = (graph, logits)
        return graph, logits

    def _drop_graphs(self) -> None:
        # A memory pool goes away with the last graph that used it: new graphs need a new pool.
        self._graphs.clear()
        self._pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
