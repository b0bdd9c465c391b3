"""The dispatch loop on its own, driven over pipes with a fake engine (the real engine is tested in a subprocess)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.framing import FrameWriter, encode_frame, read_frame
from idefics2_worker.server.frame_loop import Server


class FakeResult:
    def to_wire(self) -> dict[str, Any]:
        return {"text": "done"}


class FakeEngine:
    """Streams one token every 10 ms until `maxNewTokens` or cancel; `load` takes 50 ms."""

    summary: dict[str, Any] | None = None
    batch: Any = None  # no batch decoder: every request runs alone, in order
    released = 0

    def load(self, params: Any, cancel: threading.Event, on_progress: Any) -> dict[str, Any]:
        on_progress("model", "loading")
        time.sleep(0.05)
        self.summary = {"model": params.model}
        return self.summary

    def generate(self, params: Any, payload: bytes, on_token: Any, cancel: threading.Event) -> FakeResult:
        for index in range(params.generate_kwargs["max_new_tokens"]):
            if cancel.is_set():
                raise WorkerError("ABORTED", "cancelled")
            on_token("x", [index])
            time.sleep(0.01)
        return FakeResult()

    def release_memory(self) -> dict[str, Any]:
        self.released += 1
        return {"freedKvCacheBytes": 0, "released": self.released}

    def describe(self) -> dict[str, Any] | None:
        return self.summary


class Harness:
    def __init__(self) -> None:
        in_read, self._in_write = os.pipe()
        out_read, out_write = os.pipe()
        self._to_server = os.fdopen(self._in_write, "wb")
        self._from_server = os.fdopen(out_read, "rb")
        self._server_in = os.fdopen(in_read, "rb")
        self._server_out = os.fdopen(out_write, "wb")
        self.server = Server(FakeEngine(), self._server_in, FrameWriter(self._server_out), info=lambda m: {"m": m})
        self.exit_code: int | None = None
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self._threads = [threading.Thread(target=self._serve), threading.Thread(target=self._read)]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        self.exit_code = self.server.serve(drain_seconds=5)
        self._server_out.close()

    def _read(self) -> None:
        while (frame := read_frame(self._from_server)) is not None:
            self.frames.put(frame[0])

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self._to_server.write(encode_frame(header, payload))
        self._to_server.flush()

    def generate(self, request_id: int, tokens: int) -> None:
        params = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "images": []}
        params["options"] = {"maxNewTokens": tokens}
        self.send({"type": "request", "id": request_id, "method": "generate", "params": params})

    def until_final(self, request_id: int, timeout: float = 10) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        events, deadline = [], time.monotonic() + timeout
        while True:
            frame = self.frames.get(timeout=max(0.01, deadline - time.monotonic()))
            if frame.get("id") == request_id and frame["type"] == "event":
                events.append(frame)
            elif frame.get("id") == request_id:
                return events, frame

    def close(self) -> None:
        if not self._to_server.closed:
            self._to_server.close()
        for thread in self._threads:
            thread.join(10)
        self._from_server.close()
        self._server_in.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    running = Harness()
    yield running
    running.close()


def test_requests_run_one_at_a_time_in_arrival_order(harness: Harness) -> None:
    harness.generate(1, 3)
    harness.send({"type": "request", "id": 2, "method": "ping", "params": {}})
    seen = [harness.frames.get(timeout=5) for _ in range(5)]
    assert [(f["id"], f["type"]) for f in seen] == [(1, "event")] * 3 + [(1, "result"), (2, "result")]


def test_cancel_of_the_running_generation_ends_it_with_aborted(harness: Harness) -> None:
    harness.generate(1, 10_000)
    assert harness.frames.get(timeout=5)["type"] == "event"
    harness.send({"type": "cancel", "id": 1})
    _, final = harness.until_final(1)
    assert final["error"]["code"] == "ABORTED"


def test_cancel_of_a_queued_request_answers_aborted_before_the_running_one_ends(harness: Harness) -> None:
    harness.generate(1, 10_000)
    harness.generate(2, 1)
    harness.send({"type": "cancel", "id": 2})
    events, final = harness.until_final(2, timeout=5)
    assert (events, final["error"]["code"]) == ([], "ABORTED")
    harness.send({"type": "cancel", "id": 1})
    assert harness.until_final(1)[1]["error"]["code"] == "ABORTED"


def test_a_cancel_for_an_unknown_or_finished_id_is_ignored(harness: Harness) -> None:
    harness.send({"type": "cancel", "id": 99})
    harness.send({"type": "request", "id": 1, "method": "ping", "params": {}})
    assert harness.until_final(1)[1]["result"] == {"pong": True}


@pytest.mark.parametrize(
    ("header", "blamed_id"),
    [
        ({"type": "request", "id": 0, "method": "ping"}, None),
        ({"type": "request", "id": "7", "method": "ping"}, None),
        ({"type": "request", "id": 3, "method": "fly"}, 3),
        ({"type": "hello"}, None),
    ],
)
def test_a_malformed_frame_is_a_protocol_error_and_serving_goes_on(
    harness: Harness, header: dict[str, Any], blamed_id: int | None
) -> None:
    harness.send(header)
    error = harness.frames.get(timeout=5)
    assert (error["type"], error["id"], error["error"]["code"]) == ("error", blamed_id, "PROTOCOL_ERROR")
    harness.send({"type": "request", "id": 1, "method": "ping", "params": {}})
    assert harness.until_final(1)[1]["result"] == {"pong": True}


def test_load_streams_progress_and_info_reports_the_loaded_model(harness: Harness) -> None:
    harness.send({"type": "request", "id": 1, "method": "load", "params": {"model": "tiny"}})
    events, final = harness.until_final(1)
    assert [e["event"] for e in events] == ["progress"]
    assert final["result"] == {"model": "tiny"}
    harness.send({"type": "request", "id": 2, "method": "info", "params": {}})
    assert harness.until_final(2)[1]["result"] == {"m": {"model": "tiny"}}


def test_shutdown_aborts_queued_requests_stops_the_running_one_and_exits_0(harness: Harness) -> None:
    harness.generate(1, 10_000)
    harness.generate(2, 1)
    assert harness.frames.get(timeout=5)["type"] == "event"
    harness.send({"type": "shutdown"})
    codes = {}
    while len(codes) < 2:
        frame = harness.frames.get(timeout=5)
        if frame["type"] == "error":
            codes[frame["id"]] = frame["error"]["code"]
    assert codes == {1: "ABORTED", 2: "ABORTED"}
    harness.close()
    assert harness.exit_code == 0


def test_an_oversized_frame_is_reported_and_the_reader_stops_with_exit_1(harness: Harness) -> None:
    harness._to_server.write((0xFFFFFFFF).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    harness._to_server.flush()
    error = harness.frames.get(timeout=5)
    assert (error["id"], error["error"]["code"]) == (None, "PROTOCOL_ERROR")
    harness.close()
    assert harness.exit_code == 1


def test_release_memory_waits_for_the_request_ahead_of_it_and_answers_with_the_engines_report(harness: Harness) -> None:
    harness.generate(1, 20)
    harness.send({"type": "request", "id": 2, "method": "releaseMemory", "params": {}})
    events, first = harness.until_final(1)
    assert first["type"] == "result"
    assert len(events) == 20
    assert harness.until_final(2)[1]["result"] == {"freedKvCacheBytes": 0, "released": 1}
