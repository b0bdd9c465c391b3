"""How a cancel reaches a request's work: checks between its stages, and inside every forward pass it runs."""

from __future__ import annotations

import contextlib
import threading
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
    import torch

    def check(_module: Any, _args: Any) -> None:
        if cancel.is_set():
            raise aborted()

    layers = [layer for module in model.modules() if isinstance(module, torch.nn.ModuleList) for layer in module]
    handles = [layer.register_forward_pre_hook(check) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
