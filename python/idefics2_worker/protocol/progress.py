"""How the engine reports a load's progress to the server, which sends it as `progress` events."""

from __future__ import annotations

from typing import Protocol


class OnProgress(Protocol):
    """A stage starting (no count), or a count of its work: `done` of `total` `unit`s ("bytes", "items")."""

    def __call__(
        self,
        stage: str,
        message: str,
        *,
        done: float | None = None,
        total: float | None = None,
        unit: str | None = None,
    ) -> None: ...
