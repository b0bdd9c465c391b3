"""The dispatch loop: the reader handles `cancel` and `shutdown` at once and queues requests for one model thread."""

from __future__ import annotations

import collections
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from .errors import WorkerError, to_protocol_error
from .framing import FrameError, FrameWriter, read_frame
from .params import parse_generate, parse_load

METHODS = ("ping", "load", "generate", "info")
_STAGES: dict[str, Any] = {"load": "load", "generate": "generate"}


class EngineLike(Protocol):
    summary: dict[str, Any] | None

    def load(self, params: Any, cancel: threading.Event, on_progress: Any) -> dict[str, Any]: ...

    def generate(self, params: Any, payload: bytes, on_token: Any, cancel: threading.Event) -> dict[str, Any]: ...


@dataclass
class Job:
    id: int
    method: str
    params: Any
    payload: bytes
    cancel: threading.Event = field(default_factory=threading.Event)


class Server:
    """Runs requests one at a time, in arrival order, on a model thread; reads frames on the calling thread."""

    def __init__(self, engine: EngineLike, reader: BinaryIO, writer: FrameWriter, info: Any = None) -> None:
        self.engine = engine
        self.reader = reader
        self.writer = writer
        self._info = info
        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._stopping = False
        self._model_thread = threading.Thread(target=self._model_loop, name="idefics2-model", daemon=True)

    # Reads frames until `shutdown` or end of input; returns the process exit code.
    def serve(self, drain_seconds: float = 5.0) -> int:
        self._model_thread.start()
        code = 0
        while True:
            try:
                frame = read_frame(self.reader)
            except FrameError as error:
                self._send_error(None, WorkerError("PROTOCOL_ERROR", str(error)))
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
                self._cancel(header.get("id"))
            elif kind == "request":
                self._enqueue(header, payload)
            else:
                self._send_error(None, WorkerError("PROTOCOL_ERROR", f"Unknown frame type {kind!r}"))
        self._stop()
        self._model_thread.join(drain_seconds)
        return code

    def stopped_cleanly(self) -> bool:
        return not self._model_thread.is_alive()

    def _enqueue(self, header: dict[str, Any], payload: bytes) -> None:
        request_id, method = header.get("id"), header.get("method")
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 1:
            message = f"A request needs a positive integer `id`, got {request_id!r}"
            self._send_error(None, WorkerError("PROTOCOL_ERROR", message))
            return
        if method not in METHODS:
            message = f"Unknown method {method!r}; expected one of {list(METHODS)}"
            self._send_error(request_id, WorkerError("PROTOCOL_ERROR", message))
            return
        with self._lock:
            self._queue.append(Job(request_id, method, header.get("params"), payload))
            self._lock.notify()

    def _cancel(self, request_id: Any) -> None:
        with self._lock:
            queued = next((job for job in self._queue if job.id == request_id), None)
            if queued is not None:
                self._queue.remove(queued)
            elif self._running is not None and self._running.id == request_id:
                self._running.cancel.set()
        if queued is not None:
            self._send_error(queued.id, WorkerError("ABORTED", "The request was cancelled before it started"))

    def _stop(self) -> None:
        with self._lock:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._lock.notify_all()
        for job in dropped:
            self._send_error(job.id, WorkerError("ABORTED", "The worker is shutting down"))

    def _model_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._running = self._queue.popleft()
            try:
                result = self._execute(job)
            except Exception as error:
                self._send_error(job.id, error, _STAGES.get(job.method, "other"))
            else:
                self.writer.write({"type": "result", "id": job.id, "result": result})
            finally:
                with self._lock:
                    self._running = None

    def _execute(self, job: Job) -> dict[str, Any]:
        if job.method == "ping":
            return {"pong": True}
        if job.method == "info":
            return self._info(self.engine.summary) if self._info else {}
        if job.method == "load":
            return self.engine.load(parse_load(job.params), job.cancel, self._progress(job.id))
        params = parse_generate(job.params, len(job.payload))
        return self.engine.generate(params, job.payload, self._token(job.id), job.cancel)

    def _progress(self, request_id: int) -> Any:
        def emit(stage: str, message: str) -> None:
            data = {"stage": stage, "message": message}
            self.writer.write({"type": "event", "id": request_id, "event": "progress", "data": data})

        return emit

    def _token(self, request_id: int) -> Any:
        def emit(text: str, token_ids: list[int]) -> None:
            data = {"text": text, "tokenIds": token_ids}
            self.writer.write({"type": "event", "id": request_id, "event": "token", "data": data})

        return emit

    def _send_error(self, request_id: int | None, error: BaseException, stage: Any = "other") -> None:
        body = to_protocol_error(error, stage)
        if body["code"] not in ("ABORTED", "PROTOCOL_ERROR", "INVALID_MESSAGES", "INVALID_OPTIONS"):
            # The SDK keeps a stderr tail for crash reports; a failed request is worth a line there.
            print(f"idefics2_worker: request {request_id} failed: {body['code']}: {body['message']}", file=sys.stderr)
        self.writer.write({"type": "error", "id": request_id, "error": body})
