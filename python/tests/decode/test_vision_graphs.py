"""The vision tower's graphs: which shapes are captured, kept and dropped, and that a shape that cannot be captured
runs eagerly (the tiny model, CPU; the capture itself runs on the GPU: prefill_timeline.py --graph-ab)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TINY_MODEL

from idefics2_worker.decode.vision_graphs import VisionGraphs
from idefics2_worker.decode.vision_tower import whole_patch_features


@pytest.fixture(scope="module")
def model() -> Any:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL)).eval()


def pixels(count: int, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, rows * 14, cols * 14, generator=generator)


class Replayed:
    """A stand-in graph for the CPU: replay() runs the tower on the input buffer into the output buffer."""

    def __init__(self, model: Any, inputs: torch.Tensor) -> None:
        self.model, self.inputs = model, inputs
        self.output = whole_patch_features(model, inputs)
        self.replays = 0

    def replay(self) -> None:
        self.output.copy_(whole_patch_features(self.model, self.inputs))
        self.replays += 1


def replayable(monkeypatch: pytest.MonkeyPatch, graphs: VisionGraphs) -> list[Replayed]:
    recorded: list[Replayed] = []

    def record(model: Any, source: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        graph = Replayed(model, source.clone())
        recorded.append(graph)
        return graph, graph.inputs, graph.output

    monkeypatch.setattr(graphs, "_room", lambda _device: True)
    monkeypatch.setattr(graphs, "_record", record)
    return recorded


@torch.inference_mode()
def test_on_the_cpu_the_tower_runs_eagerly_and_keeps_no_graph(model: Any) -> None:
    graphs = VisionGraphs()
    for _ in range(3):
        found = graphs.features(model, pixels(2, 3, 4))
        torch.testing.assert_close(found, whole_patch_features(model, pixels(2, 3, 4)), atol=0, rtol=0)
    assert len(graphs) == 0


@torch.inference_mode()
def test_a_shape_is_captured_the_second_time_and_then_replayed_with_new_pixels(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    graphs = VisionGraphs()
    recorded = replayable(monkeypatch, graphs)
    graphs.features(model, pixels(2, 3, 4, seed=1))
    assert recorded == []  # seen once: no capture
    second = graphs.features(model, pixels(2, 3, 4, seed=2))
    assert len(recorded) == 1
    third = graphs.features(model, pixels(2, 3, 4, seed=3))
    assert len(recorded) == 1
    assert recorded[0].replays == 2
    for found, seed in ((second, 2), (third, 3)):
        torch.testing.assert_close(found, whole_patch_features(model, pixels(2, 3, 4, seed=seed)), atol=0, rtol=0)
    # Each result is a copy: a later replay does not change an earlier one.
    assert not torch.equal(second, third)


@torch.inference_mode()
def test_at_most_max_graphs_are_kept_the_least_recently_used_going_first(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    graphs = VisionGraphs(max_graphs=2)
    recorded = replayable(monkeypatch, graphs)
    shapes = [(1, 2, 2), (1, 2, 3), (1, 3, 2)]
    for shape in shapes[:2]:
        graphs.features(model, pixels(*shape))
        graphs.features(model, pixels(*shape))
    assert len(graphs) == 2
    graphs.features(model, pixels(*shapes[0]))  # the first shape is now the most recently used
    graphs.features(model, pixels(*shapes[2]))
    graphs.features(model, pixels(*shapes[2]))
    assert len(graphs) == 2
    kept = {shape for shape, _ in graphs._graphs}
    assert kept == {tuple(pixels(*shapes[0]).shape), tuple(pixels(*shapes[2]).shape)}
    graphs.features(model, pixels(*shapes[1]))  # dropped: seen again, it is captured again
    assert len(recorded) == 4
    graphs.release()
    assert len(graphs) == 0


@torch.inference_mode()
def test_a_shape_whose_capture_fails_runs_eagerly_from_then_on(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    graphs = VisionGraphs()
    monkeypatch.setattr(graphs, "_room", lambda _device: True)  # the real capture, which cannot run on the CPU
    for _ in range(3):
        found = graphs.features(model, pixels(1, 2, 3))
        torch.testing.assert_close(found, whole_patch_features(model, pixels(1, 2, 3)), atol=0, rtol=0)
    assert len(graphs) == 0
    assert graphs.failed == {((1, 3, 28, 42), torch.float32)}
