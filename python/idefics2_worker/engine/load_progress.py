"""A load's progress as counts: transformers' "Loading weights" bar (items) and the hub's download bars (bytes).

transformers and huggingface_hub report through tqdm. Their bars are replaced here by silent ones (they never write,
so stdout keeps carrying only frames and stderr stays quiet) that send each count to the SDK as a `progress` event:
at most one every `interval_s` per bar, plus the first and the last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..protocol.progress import OnProgress

# huggingface_hub's snapshot download keeps two byte bars: this one counts network bytes against a total it keeps
# guessing (it grows the total as bytes arrive), the other counts the bytes written against the files' real sizes.
_TRANSFER_BAR = "Downloading bytes"


def progress_tqdm(
    on_progress: OnProgress, stage: str, describe: str, *, unit: str, interval_s: float = 0.2
) -> type[Any]:
    """A tqdm class whose bars of `unit` ("B" for bytes, else items) report as `stage` events with message `describe`;
    its other bars stay silent."""
    from tqdm.std import tqdm as base_tqdm

    class ProgressTqdm(base_tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            desc = kwargs.get("desc") or ""
            bar_unit = kwargs.get("unit") or "it"
            kwargs["disable"] = True
            self._counted_lock = threading.Lock()
            self._reported = desc != _TRANSFER_BAR and (bar_unit == "B") == (unit == "B")
            self._last_sent_at = -1.0
            self._last_sent: float | None = None
            super().__init__(*args, **kwargs)
            self._send()

        def update(self, n: float | None = 1) -> bool | None:
            with self._counted_lock:
                self.n += 1 if n is None else n
            self._send()
            return None

        def __iter__(self) -> Iterator[Any]:
            for item in self.iterable:
                yield item
                with self._counted_lock:
                    self.n += 1
                self._send()
            self._send(final=True)

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            self._send()

        def close(self) -> None:
            self._send(final=True)
            super().close()

        def _send(self, final: bool = False) -> None:
            if not self._reported:
                return
            with self._counted_lock:
                done = float(self.n)
                total = float(self.total) if self.total else None
                now = time.monotonic()
                last = total is not None and done >= total
                if done == self._last_sent or (not (final or last) and now - self._last_sent_at < interval_s):
                    return
                self._last_sent, self._last_sent_at = done, now
            count_unit = "bytes" if unit == "B" else "items"
            try:
                on_progress(stage, describe, done=done, total=total, unit=count_unit)
            except Exception:  # a report that cannot be sent must not fail the load
                return

    return ProgressTqdm


@contextmanager
def reporting_weight_loading(on_progress: OnProgress, stage: str, describe: str) -> Iterator[None]:
    """While open, transformers' own bars (logging.tqdm: "Loading weights") report item counts as `stage` events."""
    from transformers.utils import logging

    bar = progress_tqdm(on_progress, stage, describe, unit="it")

    def hook(_factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return bar(*args, **kwargs)

    previous = logging.set_tqdm_hook(hook)
    try:
        yield
    finally:
        logging.set_tqdm_hook(previous)
