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
    def __init__(self, engine: Any = None, on_model_thread_death: Any = None) -> None:
        in_read, self._in_write = os.pipe()
        out_read, out_write = os.pipe()
        self._to_server = os.fdopen(self._in_write, "wb")
        self._from_server = os.fdopen(out_read, "rb")
        self._server_in = os.fdopen(in_read, "rb")
        self._server_out = os.fdopen(out_write, "wb")
        extra = {"on_model_thread_death": on_model_thread_death} if on_model_thread_death else {}
        writer = FrameWriter(self._server_out)
        self.server = Server(engine or FakeEngine(), self._server_in, writer, info=lambda m: {"m": m}, **extra)
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


class FaultyEngine(FakeEngine):
    """An engine whose failures are awkward to report: messages no UTF-8 can hold, results JSON cannot hold."""

    def load(self, params: Any, cancel: threading.Event, on_progress: Any) -> dict[str, Any]:
        # What from_pretrained raised for a local path with a lone surrogate in it (a file name read from disk; the
        # params themselves are refused with one).
        raise OSError(f"Can't load the configuration of '{params.model}/\udce9t\u00e9'")

    def generate(self, params: Any, payload: bytes, on_token: Any, cancel: threading.Event) -> Any:
        text = params.messages[0]["content"][0]["text"]
        if text == "nan":
            return _WireResult({"text": "x", "score": float("nan")})
        if text == "surrogate":
            on_token("\ud800", [1])
            return _WireResult({"text": "\udfff"})
        if text == "die":
            raise SystemExit(3)  # not an Exception: nothing on the model thread catches it
        raise RuntimeError(f"cannot handle {text}")


class _WireResult:
    def __init__(self, wire: dict[str, Any]) -> None:
        self.wire = wire

    def to_wire(self) -> dict[str, Any]:
        return self.wire


def _generate_text(harness: Harness, request_id: int, text: str) -> None:
    params = {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], "images": []}
    params["options"] = {"maxNewTokens": 1}
    harness.send({"type": "request", "id": request_id, "method": "generate", "params": params})


@pytest.fixture
def faulty() -> Iterator[Harness]:
    running = Harness(FaultyEngine())
    yield running
    running.close()


@pytest.mark.timeout(10)
def test_an_error_whose_message_has_a_lone_surrogate_is_answered_and_serving_goes_on(faulty: Harness) -> None:
    faulty.send({"type": "request", "id": 1, "method": "load", "params": {"model": "/models/tiny"}})
    _, final = faulty.until_final(1, timeout=5)
    assert (final["type"], final["error"]["code"]) == ("error", "MODEL_NOT_FOUND")
    assert final["error"]["message"] == "Can't load the configuration of '/models/tiny/\udce9t\u00e9'"
    faulty.send({"type": "request", "id": 2, "method": "ping", "params": {}})
    assert faulty.until_final(2, timeout=5)[1]["result"] == {"pong": True}


@pytest.mark.timeout(10)
def test_events_and_results_with_lone_surrogates_reach_the_sdk_exactly(faulty: Harness) -> None:
    _generate_text(faulty, 1, "surrogate")
    events, final = faulty.until_final(1, timeout=5)
    assert [event["data"]["text"] for event in events] == ["\ud800"]
    assert final["result"] == {"text": "\udfff"}


@pytest.mark.timeout(10)
def test_a_result_that_cannot_be_encoded_is_answered_with_an_error_and_serving_goes_on(faulty: Harness) -> None:
    _generate_text(faulty, 1, "nan")
    _, final = faulty.until_final(1, timeout=5)
    assert final["type"] == "error"
    assert final["error"]["code"] == "GENERATION_FAILED"
    assert final["error"]["message"].startswith("The worker could not encode its reply (ValueError)")
    _generate_text(faulty, 2, "other")
    assert faulty.until_final(2, timeout=5)[1]["error"]["message"] == "cannot handle other"


@pytest.mark.timeout(10)
def test_a_model_thread_that_dies_hands_its_error_to_the_death_handler() -> None:
    deaths: queue.Queue[BaseException] = queue.Queue()
    harness = Harness(FaultyEngine(), on_model_thread_death=deaths.put)
    try:
        _generate_text(harness, 1, "die")
        assert isinstance(deaths.get(timeout=5), SystemExit)
    finally:
        harness.close()


WORKER_WHOSE_MODEL_THREAD_DIES = """
import sys
from idefics2_worker.protocol.framing import FrameWriter
from idefics2_worker.server.frame_loop import Server


class Engine:
    batch = None

    def generate(self, params, payload, on_token, cancel):
        raise SystemExit(3)


Server(Engine(), sys.stdin.buffer, FrameWriter(sys.stdout.buffer)).serve()
"""


@pytest.mark.timeout(20)
def test_a_worker_whose_model_thread_dies_exits_at_once_so_the_sdk_sees_a_crash() -> None:
    import subprocess
    import sys

    from conftest import PYTHON_DIR

    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    params = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "images": []}
    params["options"] = {"maxNewTokens": 1}
    pipe = subprocess.PIPE
    command = [sys.executable, "-c", WORKER_WHOSE_MODEL_THREAD_DIES]
    with subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, env=env) as process:
        assert process.stdin is not None
        assert process.stderr is not None
        process.stdin.write(encode_frame({"type": "request", "id": 1, "method": "generate", "params": params}))
        process.stdin.flush()
        started = time.monotonic()
        # stdin stays open: the worker must end on its own, not because its input ended.
        assert process.wait(timeout=10) == 70
        assert time.monotonic() - started < 5
        assert b"idefics2_worker: the model thread failed: SystemExit: 3" in process.stderr.read()
