"""Modules' forwards replaced for the length of a `with` block, then put back as they were."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def current_forward(module: Any) -> Any:
    """The forward `module` runs now: one an instance was given (an outer replacement), else its class's."""
    forward = module.__dict__.get("forward")
    return forward if forward is not None else type(module).forward.__get__(module)


@contextmanager
def replaced_forwards(replacements: Sequence[tuple[Any, Any]]) -> Iterator[None]:
    """Inside, each (module, forward) pair's module runs that forward; after, its own again (or the one an instance
    already had). Set in each module's __dict__, as `module.forward = ...` would, without nn.Module.__setattr__'s
    checks: a prefill swaps ~600 layers, and the host's time is what the GPU waits on
    (scripts/gpu/prefill_timeline.py)."""
    saved = [(module, module.__dict__.get("forward")) for module, _ in replacements]
    for module, forward in replacements:
        module.__dict__["forward"] = forward
    try:
        yield
    finally:
        for module, previous in saved:
            if previous is None:
                del module.__dict__["forward"]
            else:
                module.__dict__["forward"] = previous
