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


class BatchLike(Protocol):
    busy: bool

    def has_room(self) -> bool: ...

    def accepts(self, params: Any) -> bool: ...

    def admit(self, params: Any, payload: bytes, on_token: Any, cancel: threading.Event, on_done: Any) -> bool: ...

    def step(self) -> None: ...

    def cancel_all(self, error: BaseException) -> None: ...


class EngineLike(Protocol):
    summary: dict[str, Any] | None
    batch: BatchLike | None

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
    """Runs requests in arrival order on a model thread; reads frames on the calling thread.

    With the engine's batch decoder, generations join the running batch between decode steps while there is
    room; any other request (a load, or a generation the batch decoder does not take) waits until the batch
    has drained, so requests still take effect in the order they were sent.
    """

    def __init__(self, engine: EngineLike, reader: BinaryIO, writer: FrameWriter, info: Any = None) -> None:
        self.engine = engine
        self.reader = reader
        self.writer = writer
        self._info = info
        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: dict[int, Job] = {}
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
            elif request_id in self._running:
                self._running[request_id].cancel.set()
        if queued is not None:
            self._send_error(queued.id, WorkerError("ABORTED", "The request was cancelled before it started"))

    def _stop(self) -> None:
        with self._lock:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            for job in self._running.values():
                job.cancel.set()
            self._lock.notify_all()
        for job in dropped:
            self._send_error(job.id, WorkerError("ABORTED", "The worker is shutting down"))

    def _model_loop(self) -> None:
        while True:
            with self._lock:
                job = self._next_job()
                while job is None and not self._stopping and not self._batch_busy():
                    self._lock.wait()
                    job = self._next_job()
                if self._stopping:
                    break
                if job is not None:
                    self._running[job.id] = job
            if job is None:
                self._step_batch()
            elif job.method == "generate" and self.engine.batch is not None:
                self._admit(job)
            else:
                self._run_alone(job)
        batch = self.engine.batch
        if batch is not None and batch.busy:
            batch.cancel_all(WorkerError("ABORTED", "The worker is shutting down"))

    def _batch_busy(self) -> bool:
        batch = self.engine.batch
        return batch is not None and batch.busy

    def _next_job(self) -> Job | None:
        """The queue's head if it can start now (called with the lock held)."""
        if not self._queue:
            return None
        head = self._queue[0]
        batch = self.engine.batch
        waits = head.method != "generate" or not batch.has_room() if batch is not None else False
        if batch is not None and batch.busy and head.method not in {"ping", "info"} and waits:
            return None
        return self._queue.popleft()

    def _run_alone(self, job: Job) -> None:
        try:
            result = self._execute(job)
        except Exception as error:
            self._send_error(job.id, error, _STAGES.get(job.method, "other"))
        else:
            self.writer.write({"type": "result", "id": job.id, "result": result})
        finally:
            self._done(job)

    def _admit(self, job: Job) -> None:
        batch = self.engine.batch
        assert batch is not None
        try:
            params = parse_generate(job.params, len(job.payload))
            if batch.accepts(params) and batch.admit(
                params, job.payload, self._token(job.id), job.cancel, self._finisher(job)
            ):
                return
        except Exception as error:
            self._send_error(job.id, error, "generate")
            self._done(job)
            return
        while batch.busy:
            self._step_batch()
        self._run_alone(job)

    def _step_batch(self) -> None:
        batch = self.engine.batch
        if batch is None:
            return
        try:
            batch.step()
        except Exception as error:
            # A failed step leaves every running sequence's cache unknown: end them all with the error.
            batch.cancel_all(error)

    def _finisher(self, job: Job) -> Any:
        def finish(result: dict[str, Any] | None, error: BaseException | None) -> None:
            if error is not None:
                self._send_error(job.id, error, "generate")
            else:
                self.writer.write({"type": "result", "id": job.id, "result": result})
            self._done(job)

        return finish

    def _done(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.id, None)

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
