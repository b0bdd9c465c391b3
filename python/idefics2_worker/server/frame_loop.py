"""The frame loop: reads frames on the calling thread, handles `cancel` and `shutdown` at once, and queues
requests for the model thread."""

from __future__ import annotations

from typing import Any, BinaryIO

from ..protocol.errors import WorkerError
from ..protocol.framing import FrameError, FrameWriter, read_frame
from .engine_interface import EngineLike
from .model_thread import METHODS, Info, Job, ModelThread, OnDeath, end_process
from .replies import Replies


class Server:
    """Runs requests in arrival order on a model thread; reads frames on the calling thread."""

    def __init__(
        self,
        engine: EngineLike,
        reader: BinaryIO,
        writer: FrameWriter,
        info: Info | None = None,
        on_model_thread_death: OnDeath = end_process,
    ) -> None:
        self.engine = engine
        self.reader = reader
        self.replies = Replies(writer)
        self._model = ModelThread(engine, self.replies, info, on_model_thread_death)

    # Reads frames until `shutdown` or end of input; returns the process exit code.
    def serve(self, drain_seconds: float = 5.0) -> int:
        self._model.start()
        code = 0
        while True:
            try:
                frame = read_frame(self.reader, self._on_header)
            except FrameError as error:
                self._model.reading_generation(False)
                self.replies.error(None, WorkerError("PROTOCOL_ERROR", str(error)))
                if error.fatal:
                    code = 1
                    break
                continue
            if frame is None:
                break
            header, payload = frame
            kind = header["type"]
            if kind == "shutdown":
                break
            if kind == "cancel":
                self._model.cancel(header.get("id"))
            elif kind == "request":
                self._enqueue(header, payload)
            else:
                self.replies.error(None, WorkerError("PROTOCOL_ERROR", f"Unknown frame type {kind!r}"))
            self._model.reading_generation(False)  # a generation's frame that was answered, not queued
        self._model.stop()
        self._model.join(drain_seconds)
        return code

    def _on_header(self, header: dict[str, Any], _payload_bytes: int) -> None:
        # An idle batch's admission waits for a generation whose frame is still being read (its pictures' pixels).
        if header["type"] == "request" and header.get("method") == "generate":
            self._model.reading_generation(True)

    def stopped_cleanly(self) -> bool:
        return not self._model.is_alive()

    def _enqueue(self, header: dict[str, Any], payload: bytes) -> None:
        request_id, method = header.get("id"), header.get("method")
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 1:
            message = f"A request needs a positive integer `id`, got {request_id!r}"
            self.replies.error(None, WorkerError("PROTOCOL_ERROR", message))
            return
        if method not in METHODS:
            message = f"Unknown method {method!r}; expected one of {list(METHODS)}"
            self.replies.error(request_id, WorkerError("PROTOCOL_ERROR", message))
            return
        self._model.enqueue(Job(request_id, method, header.get("params"), payload))
