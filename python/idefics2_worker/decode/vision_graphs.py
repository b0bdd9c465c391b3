"""The mask-free vision tower (`vision_tower.whole_patch_features`) replayed from a CUDA graph per input shape.

Launching the tower's ~1,200-1,900 kernels one by one from Python takes the host about as long as the GPU takes to
run them (an 8-bit prefill's tower on an H200: 98 ms of wall for 62 ms of GPU, traced), and the host's speed on a
shared machine swings by ~40% from one minute to the next (docs/BENCHMARKS.md, 2026-12-01 night). Replayed from a
graph, the tower is one launch: the host goes straight on to queue the text model while the GPU runs the tower.

A graph fits one shape: sub-images x channels x height x width. A shape is captured the second time it is seen
(pictures of one size from one camera or app repeat; a shape seen once costs no capture), while the card keeps
`vision_tower.VISION_HEADROOM_BYTES` free, and at most `MAX_GRAPHS` are kept, the least recently used going first.
The graphs share one memory pool: each replay's intermediates are dead once its output is copied out, which happens
before the next replay. Replay runs the kernels the eager tower runs, on the same inputs, so the features are the
same bits (checked on the GPU by scripts/gpu/prefill_timeline.py --graph-ab). Inside a replay a cancel is not seen;
the tower is ~60 ms, and the prefill's text layers still check.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

import torch

from .vision_tower import vision_headroom, whole_patch_features

MAX_GRAPHS = 8
Shape = tuple[tuple[int, ...], torch.dtype]


class VisionGraphs:
    """`features(model, pixels)`: `whole_patch_features`, replayed from a graph once the shape has been seen before."""

    def __init__(self, max_graphs: int = MAX_GRAPHS, capture_at: int = 2) -> None:
        self.max_graphs = max_graphs
        self.capture_at = capture_at
        self._seen: Counter[Shape] = Counter()
        self._graphs: OrderedDict[Shape, tuple[Any, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._pool: Any = None
        self.failed: set[Shape] = set()  # shapes whose capture raised: they run eagerly from then on

    def __len__(self) -> int:
        return len(self._graphs)

    def features(self, model: Any, pixels: torch.Tensor) -> torch.Tensor:
        shape: Shape = (tuple(pixels.shape), pixels.dtype)
        captured = self._graphs.get(shape)
        if captured is None:
            self._seen[shape] += 1
            if self._seen[shape] < self.capture_at or shape in self.failed or not self._room(pixels.device):
                return whole_patch_features(model, pixels)
            if len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            try:
                captured = self._record(model, pixels)
            except Exception:  # a module that cannot be captured: the tower stays eager for this shape
                self.failed.add(shape)
                return whole_patch_features(model, pixels)
            self._graphs[shape] = captured
        self._graphs.move_to_end(shape)
        graph, inputs, output = captured
        inputs.copy_(pixels)
        graph.replay()
        # Copied out: the next replay (another window of this shape, or another shape in the shared pool) reuses it.
        return output.clone()

    def release(self) -> None:
        """Drops every graph and its memory; shapes are captured again once seen again."""
        self._graphs.clear()
        self._seen.clear()
        self._pool = None

    def _room(self, device: torch.device) -> bool:
        return vision_headroom(device)

    def _record(self, model: Any, pixels: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """A graph of the tower on a copy of `pixels`, with its input and output buffers."""
        # The shape ran eagerly before (capture_at >= 2), so its kernels are compiled and cuDNN's plans built: a
        # capture records launches and cannot compile or plan.
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        inputs = pixels.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = whole_patch_features(model, inputs)
        return graph, inputs, output
