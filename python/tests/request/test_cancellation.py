"""A cancel reaches inside forward passes: the prefill (vision tower and text model) stops at its next layer, with
both decoders on the tiny model, and the hooks that make it so are gone afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import load_params
from demo_inputs import generate_params

from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.params import parse_generate, parse_load
from idefics2_worker.request.cancellation import stop_on_cancel

ENGINES: dict[str, Engine] = {}


def engine(decoder: str) -> Engine:
    if decoder not in ENGINES:
        loaded = Engine()
        loaded.load(parse_load(load_params(decoder=decoder)), threading.Event(), lambda *_: None)
        ENGINES[decoder] = loaded
    return ENGINES[decoder]


def hook_counts(model: Any) -> int:
    return sum(len(module._forward_pre_hooks) for module in model.modules())


def layer_stacks(model: Any) -> tuple[Any, Any]:
    """(the vision tower's first encoder layer, the text model's last decoder layer)."""
    return model.model.vision_model.encoder.layers[0], model.model.text_model.layers[-1]


def run_cancelled_in_prefill(decoder: str, start: Callable[[Engine, threading.Event, list[str]], None]) -> list[int]:
    """Sets the cancel from inside the vision tower's first layer; returns how often the text model's last layer
    ran after that (it must not run at all) and checks that the request ended ABORTED with no token out."""
    loaded = engine(decoder)
    assert loaded.loaded is not None
    model = loaded.loaded.model
    first_vision, last_text = layer_stacks(model)
    cancel = threading.Event()
    after_cancel: list[int] = []
    before = hook_counts(model)
    set_it = first_vision.register_forward_pre_hook(lambda *_: cancel.set())
    count_it = last_text.register_forward_pre_hook(lambda *_: after_cancel.append(1) if cancel.is_set() else None)
    tokens: list[str] = []
    try:
        with pytest.raises(WorkerError) as raised:
            start(loaded, cancel, tokens)
    finally:
        set_it.remove()
        count_it.remove()
    assert raised.value.code == "ABORTED"
    assert tokens == []
    assert hook_counts(model) == before
    return after_cancel


def demo_request() -> tuple[Any, bytes]:
    raw, payload = generate_params(8)
    return parse_generate(raw, len(payload)), payload


@pytest.mark.timeout(120)
def test_a_cancel_during_the_reference_prefill_stops_it_before_the_text_model_runs() -> None:
    def start(loaded: Engine, cancel: threading.Event, tokens: list[str]) -> None:
        params, payload = demo_request()
        loaded.generate(params, payload, lambda text, _ids: tokens.append(text), cancel)

    assert run_cancelled_in_prefill("reference", start) == []


@pytest.mark.timeout(120)
def test_a_cancel_during_the_fast_decoders_prefill_stops_it_and_nothing_joins_the_batch() -> None:
    def start(loaded: Engine, cancel: threading.Event, tokens: list[str]) -> None:
        params, payload = demo_request()
        assert loaded.batch is not None
        loaded.batch.admit(params, payload, lambda text, _ids: tokens.append(text), cancel, lambda *_: None)

    assert run_cancelled_in_prefill("fast", start) == []
    batch = engine("fast").batch
    assert batch is not None
    assert not batch.busy


def test_the_hooks_leave_a_forward_pass_alone_until_the_cancel_and_are_removed_after() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ModuleList([torch.nn.Linear(2, 2)]))
    layer = model[1][0]
    cancel = threading.Event()
    with stop_on_cancel(model, cancel):
        assert layer(torch.ones(1, 2)).shape == (1, 2)
        cancel.set()
        with pytest.raises(WorkerError):
            layer(torch.ones(1, 2))
    assert layer(torch.ones(1, 2)).shape == (1, 2)
    assert hook_counts(model) == 0
