"""What the server needs of the model behind it (`engine.Engine` in the worker; fakes in tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..protocol.params import GenerateParams, LoadParams
from ..protocol.progress import OnProgress

OnToken = Callable[[str, list[int]], None]


class WireForm(Protocol):
    def to_wire(self) -> dict[str, Any]: ...


OnDone = Callable[[Any, BaseException | None], None]
# One generation offered to the batch: its params and payload, where its tokens go, its cancel, where its end goes.
Admission = tuple[GenerateParams, bytes, OnToken, threading.Event, OnDone]
# What became of it: True, it runs (`on_done` will be called); False, the batch does not take it and nothing started
# (run it through `generate`); an error, it failed before it started (answer it with that error).
Admitted = bool | BaseException


class BatchLike(Protocol):
    """The fast decoder: generations join a running batch between steps, several at once through `admit_many`."""

    @property
    def busy(self) -> bool: ...

    def room(self) -> int: ...

    def accepts(self, params: GenerateParams) -> bool: ...

    def admit(
        self, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event, on_done: OnDone
    ) -> bool: ...

    def admit_many(
        self, admissions: Sequence[Admission], later: Callable[[int], Sequence[Admission]] | None = None
    ) -> list[Admitted]: ...

    def step(self) -> None: ...

    def cancel_all(self, error: BaseException) -> None: ...


class EngineLike(Protocol):
    @property
    def batch(self) -> BatchLike | None: ...

    def load(self, params: LoadParams, cancel: threading.Event, on_progress: OnProgress) -> dict[str, Any]: ...

    def generate(
        self, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event
    ) -> WireForm: ...

    def release_memory(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any] | None: ...
