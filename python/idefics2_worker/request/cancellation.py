"""How a cancel reaches a request's work: checks between its stages, and inside every forward pass it runs."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ..protocol.errors import WorkerError


def aborted() -> WorkerError:
    return WorkerError("ABORTED", "The generation was cancelled")


def stop_if_cancelled(cancel: threading.Event | None) -> None:
    """Ends the request here if its cancel event is set (between preprocessing stages)."""
    if cancel is not None and cancel.is_set():
        raise aborted()


@contextlib.contextmanager
def stop_on_cancel(model: Any, cancel: threading.Event) -> Iterator[None]:
    """Within it, a forward pass (the vision tower, the prefill, a decode step) stops at its next layer once the
    request is cancelled: every layer of every layer stack checks the event before it runs (a few hundred
    nanoseconds a layer), so a cancel need not wait for a long prefill to finish."""

    def check(_module: Any, _args: Any) -> None:
        if cancel.is_set():
            raise aborted()

    handles = [layer.register_forward_pre_hook(check) for layer in _stacked_layers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


_LAYERS: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def _stacked_layers(model: Any) -> list[Any]:
    """The layers of every layer stack (ModuleList) in the model, found once per model: walking idefics2-8b's ~1,000
    modules each time put milliseconds of host time before every prefill's first launch."""
    import torch

    layers = _LAYERS.get(model)
    if layers is None:
        layers = [layer for module in model.modules() if isinstance(module, torch.nn.ModuleList) for layer in module]
        _LAYERS[model] = layers
    return layers
