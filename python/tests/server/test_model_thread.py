"""The model thread with the real engine's fast decoder (the tiny model, CPU): generations queued together are
offered to the batch together, each still answered alone, and requests still take effect in the order sent."""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import load_params
from demo_inputs import as_payload, demo_images, generate_params

from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.framing import FrameWriter, read_frame
from idefics2_worker.protocol.params import parse_generate, parse_load
from idefics2_worker.server import model_thread
from idefics2_worker.server.model_thread import Job, ModelThread
from idefics2_worker.server.replies import Replies

MAX_BATCH = 4
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def engine() -> Engine:
    fast = Engine()
    fast.load(parse_load(load_params(decoder="fast", maxBatchSize=MAX_BATCH)), threading.Event(), lambda *_: None)
    return fast


@pytest.fixture
def offered(engine: Engine) -> Iterator[list[int]]:
    """How many requests each `admit_many` call is offered, with those it takes `later` (the real one runs)."""
    batch = engine.batch
    assert batch is not None
    sizes: list[int] = []
    real = batch.admit_many

    def admit_many(admissions: Any, later: Any = None) -> Any:
        sizes.append(len(admissions))

        def counted(room: int) -> Any:
            arrived = later(room)
            sizes[-1] += len(arrived)
            return arrived

        return real(admissions, counted if later is not None else None)

    batch.admit_many = admit_many  # type: ignore[method-assign]
    yield sizes
    del batch.admit_many


def text_job(question: str, **options: Any) -> Job:
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    params = {"messages": messages, "images": [], "options": {"maxNewTokens": 24, **options}, "stream": True}
    return Job(next(_ids), "generate", params, b"")


def demo_job(**options: Any) -> Job:
    params, payload = generate_params(24, **options)
    return Job(next(_ids), "generate", params, payload)


def unreadable_job() -> Job:
    specs, payload = as_payload([demo_images()[1].resize((5, 1))])  # 1 pixel tall: the processor cannot split it
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    params = {"messages": messages, "images": specs, "options": {"maxNewTokens": 24}}
    return Job(next(_ids), "generate", params, payload)


class WaitsSeen(threading.Condition):
    """The model thread's lock: counts its timed waits (an admission's) and queues `in_wait`'s jobs at the first, as
    a reader thread would that parses their frames while the model thread waits. With `being_read`, the first wait
    also finds the frame loop reading a generation's frame: its jobs are queued `read_for` seconds later, and the
    reading ends then (never, with `read_for` None)."""

    def __init__(
        self, thread: ModelThread, in_wait: list[Job], being_read: list[Job] | None, read_for: float | None
    ) -> None:
        super().__init__()
        self.thread = thread
        self.in_wait = in_wait
        self.being_read = being_read
        self.read_for = read_for
        self.timed = 0

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.timed += 1
            while self.in_wait:
                self.thread.enqueue(self.in_wait.pop(0))  # the lock is reentrant: this thread holds it
            if self.being_read is not None:
                self.thread.reading_generation(True)
                if self.read_for is not None:
                    threading.Timer(self.read_for, self._read, [self.being_read]).start()
                self.being_read = None
        return super().wait(timeout)

    def _read(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.thread.enqueue(job)
        self.thread.reading_generation(False)


@contextlib.contextmanager
def arriving_jobs(thread: ModelThread, arriving: list[Job], while_running: list[Job]) -> Iterator[None]:
    """Queues `arriving` as the batch prepares its first request and `while_running` at its first step."""
    batch = thread.engine.batch
    assert batch is not None
    prepare, step = batch._prepare, batch.step

    def prepare_while_more_arrive(admission: Any) -> Any:
        while arriving:
            thread.enqueue(arriving.pop(0))
        return prepare(admission)

    def step_while_more_arrive() -> None:
        while while_running:
            thread.enqueue(while_running.pop(0))
        step()

    batch._prepare = prepare_while_more_arrive  # type: ignore[method-assign]
    batch.step = step_while_more_arrive  # type: ignore[method-assign]
    try:
        yield
    finally:
        del batch._prepare
        del batch.step


def run(  # noqa: PLR0917 - the ways jobs reach the thread
    engine: Engine,
    jobs: list[Job],
    timeout: float = 90,
    arriving: list[Job] | None = None,
    in_wait: list[Job] | None = None,
    while_running: list[Job] | None = None,
    waits: list[int] | None = None,
    being_read: list[Job] | None = None,
    read_for: float | None = None,
) -> list[dict[str, Any]]:
    """Queues every job before the thread starts (`arriving` while the batch prepares its first request, `in_wait`
    in its admission's wait, else after the first answer; `while_running` at the batch's first step; `being_read`
    as `WaitsSeen` reads them), runs it until each job is answered; the final frames in the order they came. `waits`
    gets the count of admission waits."""
    in_wait = list(in_wait or [])
    expected = len(jobs) + len(arriving or []) + len(in_wait) + len(while_running or [])
    expected += len(being_read or []) if read_for is not None else 0
    read_end, write_end = os.pipe()
    reader, writer = os.fdopen(read_end, "rb"), os.fdopen(write_end, "wb")
    frames: queue.Queue[dict[str, Any]] = queue.Queue()
    deaths: list[BaseException] = []

    def read() -> None:
        while (frame := read_frame(reader)) is not None:
            frames.put(frame[0])

    listener = threading.Thread(target=read, daemon=True)
    listener.start()
    thread = ModelThread(engine, Replies(FrameWriter(writer)), None, on_death=deaths.append)
    lock = thread._lock = WaitsSeen(thread, in_wait, None if being_read is None else list(being_read), read_for)
    for job in jobs:
        thread.enqueue(job)
    finals: list[dict[str, Any]] = []
    with arriving_jobs(thread, list(arriving or []), list(while_running or [])):
        thread.start()
        try:
            while len(finals) < expected:
                frame = frames.get(timeout=timeout)
                if frame["type"] != "event":
                    finals.append(frame)
                    while in_wait:  # no admission waited: they come after the first answer
                        thread.enqueue(in_wait.pop(0))
        finally:
            if waits is not None:
                waits.append(lock.timed)
            thread.stop()
            thread.join(10)
            writer.close()
            listener.join(10)
            reader.close()
    assert not deaths
    return finals


def alone(engine: Engine, job: Job) -> dict[str, Any]:
    params = parse_generate(job.params, len(job.payload))
    return engine.generate(params, job.payload, lambda *_: None, threading.Event()).to_wire()


@pytest.mark.timeout(180)
def test_generations_queued_together_are_admitted_together_and_each_answered_alone(
    engine: Engine, offered: list[int]
) -> None:
    good = [demo_job(), text_job("Tell me about squares."), text_job("Say something about squares.")]
    bad_options = text_job("?", topP=2.0)
    unreadable = unreadable_job()
    cancelled = demo_job()
    cancelled.cancel.set()
    ping = Job(next(_ids), "ping", {}, b"")
    later = text_job("What is a circle?")
    jobs = [good[0], bad_options, unreadable, good[1], cancelled, good[2], ping, later]
    finals = {frame["id"]: frame for frame in run(engine, jobs)}
    # The first four (the batch's room) were taken together, and offered but for the one whose options do not parse;
    # the room left then took the next one (`later`, as if it had arrived meanwhile: its cancel ends it before its
    # prefill); then the next, as a place freed; the ping is no generation, so the one behind it waited for it.
    assert offered == [4, 1, 1]
    assert finals[bad_options.id]["error"]["code"] == "INVALID_OPTIONS"
    assert finals[unreadable.id]["error"]["code"] == "IMAGE_UNREADABLE"
    assert finals[cancelled.id]["error"]["code"] == "ABORTED"
    assert finals[ping.id]["result"] == {"pong": True}
    for job in [*good, later]:
        frame = finals[job.id]
        assert frame["type"] == "result", frame
        expected = alone(engine, job)
        assert frame["result"]["tokenIds"] == expected["tokenIds"]
        assert frame["result"]["text"] == expected["text"]


@pytest.mark.timeout(180)
def test_generations_that_arrive_while_the_first_is_prepared_join_its_prefill(
    engine: Engine, offered: list[int]
) -> None:
    first = text_job("Tell me about squares.")
    arriving = [text_job("Say something about squares."), demo_job()]
    finals = {frame["id"]: frame for frame in run(engine, [first], arriving=arriving)}
    assert offered == [3]
    for job in [first, *arriving]:
        frame = finals[job.id]
        assert frame["type"] == "result", frame
        assert frame["result"]["tokenIds"] == alone(engine, job)["tokenIds"]


@pytest.mark.timeout(180)
def test_a_generation_that_arrives_just_after_an_idle_batch_finds_its_queue_empty_joins_its_prefill(
    engine: Engine, offered: list[int]
) -> None:
    # Sent together, but its frame was parsed only once the first request was prepared (the reader thread waited for
    # the GIL): the admission's short wait takes it into the same prefill.
    first = text_job("Tell me about squares.")
    in_wait = [text_job("Say something about squares.")]
    waits: list[int] = []
    finals = {frame["id"]: frame for frame in run(engine, [first], in_wait=in_wait, waits=waits)}
    assert offered == [2]
    assert waits == [2]  # the one that found it, and the one after that found none
    for job in [first, *in_wait]:
        assert finals[job.id]["result"]["tokenIds"] == alone(engine, job)["tokenIds"]


@pytest.mark.timeout(180)
def test_an_idle_admission_waits_for_a_generation_whose_frame_is_still_being_read(
    engine: Engine, offered: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its pictures' pixels are megabytes: the frame loop has its header, and the rest comes well after the short
    # wait (ADMISSION_WAIT_S) is over, yet within the wait for a frame being read.
    monkeypatch.setattr(model_thread, "READING_WAIT_S", 30.0)
    first = text_job("Tell me about squares.")
    being_read = [demo_job()]
    finals = {frame["id"]: frame for frame in run(engine, [first], being_read=being_read, read_for=0.2)}
    assert offered == [2]
    for job in [first, *being_read]:
        assert finals[job.id]["result"]["tokenIds"] == alone(engine, job)["tokenIds"]


@pytest.mark.timeout(180)
def test_a_frame_that_never_ends_holds_an_idle_admission_back_no_longer_than_the_reading_wait(
    engine: Engine, offered: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_thread, "READING_WAIT_S", 0.2)
    first = text_job("Tell me about squares.")
    finals = run(engine, [first], being_read=[], read_for=None)
    assert offered == [1]
    assert finals[0]["result"]["tokenIds"] == alone(engine, first)["tokenIds"]


@pytest.mark.timeout(180)
def test_a_running_batch_takes_a_new_generation_without_waiting_for_more(engine: Engine, offered: list[int]) -> None:
    first = text_job("Tell me about squares.")
    joining = text_job("Say something about squares.")
    waits: list[int] = []
    finals = {frame["id"]: frame for frame in run(engine, [first], while_running=[joining], waits=waits)}
    # The first admission (idle) waited once; the one that joined the running batch did not stall its decode.
    assert offered == [1, 1]
    assert waits == [1]
    for job in [first, joining]:
        assert finals[job.id]["result"]["tokenIds"] == alone(engine, job)["tokenIds"]


@pytest.mark.timeout(180)
def test_a_generation_the_batch_does_not_take_runs_after_those_before_it_and_before_those_after_it(
    engine: Engine, offered: list[int]
) -> None:
    before, beams, after = demo_job(maxNewTokens=30, minNewTokens=30), demo_job(numBeams=2), demo_job()
    finals = run(engine, [before, beams, after])
    assert [frame["id"] for frame in finals] == [before.id, beams.id, after.id]
    assert all(frame["type"] == "result" for frame in finals), finals
    # `after` was taken with `before`, then put back when `beams` (beam search: generate()) stopped the group.
    assert offered == [1, 1]
    assert finals[1]["result"]["text"] == finals[2]["result"]["text"] == "That is a blue square."
