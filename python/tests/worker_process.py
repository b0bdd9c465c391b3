"""Drives `python -m idefics2_worker` as the SDK does: frames on stdin/stdout, stderr kept aside."""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from conftest import PYTHON_DIR

from idefics2_worker.protocol.framing import FrameError, encode_frame, read_frame

_END = {"type": "__end__"}


class WorkerProcess:
    """One worker subprocess; a reader thread turns its stdout into frames, failing on any non-frame byte."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.update(extra_env or {})
        self.stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process; closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "idefics2_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            env=env,
        )
        self._frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self._backlog: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self.stream_error: FrameError | None = None
        self.ready: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while (frame := read_frame(self.proc.stdout)) is not None:
                header, payload = frame
                self._frames.put({**header, "__payload__": payload})
        except FrameError as error:
            self.stream_error = error
        self._frames.put(_END)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_frame(header, payload))
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None, payload: bytes = b"") -> int:
        request_id = next(self._ids)
        self.send({"type": "request", "id": request_id, "method": method, "params": params or {}}, payload)
        return request_id

    def next_frame(self, timeout: float) -> dict[str, Any]:
        try:
            frame = self._frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"No frame within {timeout} s; stderr tail:\n{self.stderr_tail()}") from None
        if frame is _END:
            raise AssertionError(f"Worker stdout ended ({self.stream_error}); stderr tail:\n{self.stderr_tail()}")
        return frame

    def frames_for(self, request_id: int, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Events of one request and the result or error frame that ends it; other requests' frames are kept."""
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        pending, self._backlog = self._backlog, []
        while True:
            frame = pending.pop(0) if pending else self.next_frame(max(0.01, deadline - time.monotonic()))
            if frame.get("id") != request_id:
                self._backlog.append(frame)
            elif frame["type"] == "event":
                events.append(frame)
            else:
                self._backlog.extend(pending)
                return events, frame

    def call(self, method: str, params: dict[str, Any] | None = None, payload: bytes = b"", timeout: float = 60):
        return self.frames_for(self.request(method, params, payload), timeout)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def stderr_tail(self, size: int = 4000) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")[-size:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.close_stdin()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self.stderr_file.close()
