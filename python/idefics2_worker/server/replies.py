"""Frames the server sends back: results, events, and errors mapped by the protocol's one error interceptor."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from ..protocol.errors import Stage, to_protocol_error, unsendable_reply
from ..protocol.framing import FrameWriter
from ..protocol.progress import OnProgress
from .engine_interface import OnToken

# Codes that answer the caller's own input or action: not worth a line in the SDK's stderr tail.
_QUIET_CODES = ("ABORTED", "PROTOCOL_ERROR", "INVALID_MESSAGES", "INVALID_OPTIONS")


def _number(value: float) -> float | int:
    """A count as JSON writes it best: 12, not 12.0."""
    return int(value) if float(value).is_integer() else value


class Replies:
    """Every request's answer goes out through here; an answer that cannot be encoded becomes an error that can."""

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer

    def result(self, request_id: int, result: dict[str, Any]) -> None:
        self._answer(request_id, {"type": "result", "id": request_id, "result": result})

    def error(self, request_id: int | None, error: BaseException, stage: Stage = "other") -> None:
        body = to_protocol_error(error, stage)
        if body["code"] not in _QUIET_CODES:
            # The SDK keeps a stderr tail for crash reports; a failed request is worth a line there.
            line = f"idefics2_worker: request {request_id} failed: {body['code']}: {body['message']}"
            with contextlib.suppress(OSError, ValueError):
                print(line, file=sys.stderr)
        self._answer(request_id, {"type": "error", "id": request_id, "error": body})

    def progress(self, request_id: int) -> OnProgress:
        def emit(
            stage: str,
            message: str,
            *,
            done: float | None = None,
            total: float | None = None,
            unit: str | None = None,
        ) -> None:
            data: dict[str, Any] = {"stage": stage, "message": message}
            if done is not None and unit is not None:
                data.update(
                    {"done": _number(done), "unit": unit, **({} if total is None else {"total": _number(total)})}
                )
            self.writer.write({"type": "event", "id": request_id, "event": "progress", "data": data})

        return emit

    def token(self, request_id: int) -> OnToken:
        def emit(text: str, token_ids: list[int]) -> None:
            data = {"text": text, "tokenIds": token_ids}
            self.writer.write({"type": "event", "id": request_id, "event": "token", "data": data})

        return emit

    def _answer(self, request_id: int | None, frame: dict[str, Any]) -> None:
        """Sends a request's final frame; if it cannot be encoded (a value JSON cannot hold, a frame over the limit),
        the request is answered with an error that can, so its caller never waits for an answer that never comes."""
        try:
            self.writer.write(frame)
        except Exception as failure:  # whatever the reason, the request still gets its answer
            self.writer.write({"type": "error", "id": request_id, "error": unsendable_reply(failure)})
