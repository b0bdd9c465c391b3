"""The model thread: runs queued requests in arrival order, and lets generations join the fast decoder's batch.

With the engine's batch decoder, generations join the running batch between decode steps while there is room;
any other request (a load, or a generation the batch decoder does not take) waits until the batch has drained,
so requests still take effect in the order they were sent. Generations queued one after another join together,
as many as the batch has room for (up to the first request that is not a generation): the batch prefills them in
one forward, which costs little more than one of them alone.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..bytecode.sources import record_sources
from ..protocol.errors import Stage, WorkerError
from ..protocol.params import parse_generate, parse_load
from .engine_interface import Admission, EngineLike
from .replies import Replies

METHODS = ("ping", "load", "generate", "info", "releaseMemory")
# Requests that never touch the model's memory, so they need not wait for a running batch to drain.
_BESIDE_THE_BATCH = frozenset({"ping", "info"})
_STAGES: dict[str, Stage] = {"load": "load", "generate": "generate"}
Info = Callable[[dict[str, Any] | None], dict[str, Any]]
OnDeath = Callable[[BaseException], None]
# How long an admission into an idle batch waits for more generations once its queue is empty. Requests sent together
# leave the SDK within ~0.5 ms but reached this queue 3-11 ms apart (CPU, 8 requests): the reader thread parses a
# frame only when it gets the GIL, which this thread holds while it prepares the first request. Waiting releases the
# GIL, so the frames already read are queued at once; a lone request starts at most this much later. Without it, 2-9
# rounds of 20 prefilled the first request alone and the rest in a second prefill (docs/BENCHMARKS.md, 2026-12-02).
ADMISSION_WAIT_S = 0.002
# How long it waits instead while the frame loop is reading a generation's frame. A request with pictures carries
# their pixels (the blog's two: 4.3 MB), and eight such sent together reached this queue one after another, 3-35 ms
# from a frame's header to its queueing while this thread held the GIL (CPU, tiny model): on an H200 machine the
# first was prefilled alone and the other seven together (H29, H31). Bounded, so a frame that never ends cannot hold
# back the requests already here for longer than this.
READING_WAIT_S = 0.05
# The exit code of a worker whose model thread failed (EX_SOFTWARE): the SDK reports it as a crash and restarts.
MODEL_THREAD_FAILED = 70


def end_process(error: BaseException) -> None:
    """A model thread that dies leaves nothing to run requests: end the worker, so the SDK's crash handling (every
    pending call rejected, a new worker on the next call) takes over instead of every call waiting for ever."""
    try:
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        sys.stderr.write("".join(lines))
        sys.stderr.write(f"idefics2_worker: the model thread failed: {type(error).__name__}: {error}\n")
        sys.stderr.flush()
    finally:
        os._exit(MODEL_THREAD_FAILED)


@dataclass
class Job:
    id: int
    method: str
    params: Any
    payload: bytes
    cancel: threading.Event = field(default_factory=threading.Event)


class ModelThread:
    def __init__(
        self, engine: EngineLike, replies: Replies, info: Info | None, on_death: OnDeath = end_process
    ) -> None:
        self.engine = engine
        self.replies = replies
        self._info = info
        self._on_death = on_death
        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: dict[int, Job] = {}
        self._stopping = False
        self._reading_generation = False
        self._thread = threading.Thread(target=self._run, name="idefics2-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, seconds: float) -> None:
        self._thread.join(seconds)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def enqueue(self, job: Job) -> None:
        with self._lock:
            self._queue.append(job)
            # Its frame is read: in the same step, so no admission sees the frame as still on its way once it is here.
            self._reading_generation = False
            self._lock.notify()

    def reading_generation(self, reading: bool) -> None:
        """The frame loop is reading a generation's frame (True, from its header on), or is done with that frame
        (False, once it is queued or answered)."""
        with self._lock:
            if self._reading_generation != reading:
                self._reading_generation = reading
                self._lock.notify_all()

    def cancel(self, request_id: Any) -> None:
        with self._lock:
            queued = next((job for job in self._queue if job.id == request_id), None)
            if queued is not None:
                self._queue.remove(queued)
            elif request_id in self._running:
                self._running[request_id].cancel.set()
        if queued is not None:
            self.replies.error(queued.id, WorkerError("ABORTED", "The request was cancelled before it started"))

    def stop(self) -> None:
        """Drops what is queued (each answered ABORTED) and cancels what runs; the loop then ends."""
        with self._lock:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            for job in self._running.values():
                job.cancel.set()
            self._lock.notify_all()
        for job in dropped:
            self.replies.error(job.id, WorkerError("ABORTED", "The worker is shutting down"))

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:
            # Requests are answered one by one below; reaching here means the loop itself broke.
            self._on_death(error)

    def _loop(self) -> None:
        while True:
            with self._lock:
                job = self._next_job()
                while job is None and not self._stopping and not self._batch_busy():
                    self._lock.wait()
                    job = self._next_job()
                if self._stopping:
                    break
                joining = [job] if job is not None else []
                if job is not None and job.method == "generate" and self.engine.batch is not None:
                    joining += self._following_generations(self.engine.batch.room() - 1)
                for taken in joining:
                    self._running[taken.id] = taken
            if job is None:
                self._step_batch()
            elif job.method == "generate" and self.engine.batch is not None:
                self._admit(joining)
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
        if batch is not None and batch.busy and head.method not in _BESIDE_THE_BATCH:
            joins = head.method == "generate" and batch.room() > 0
            if not joins:
                return None
        return self._queue.popleft()

    def _following_generations(self, room: int) -> list[Job]:
        """Up to `room` generations from the queue's head, stopping at the first other request (lock held)."""
        taken: list[Job] = []
        while self._queue and len(taken) < room and self._queue[0].method == "generate":
            taken.append(self._queue.popleft())
        return taken

    def _put_back(self, jobs: list[Job]) -> None:
        """Returns taken jobs to the queue's head, in their order, to start after what runs now (or, once the
        worker is stopping, answers them as `stop` answers what is queued)."""
        with self._lock:
            for job in jobs:
                self._running.pop(job.id, None)
            stopping = self._stopping
            if not stopping:
                self._queue.extendleft(reversed(jobs))
        if stopping:
            for job in jobs:
                self.replies.error(job.id, WorkerError("ABORTED", "The worker is shutting down"))

    def _run_alone(self, job: Job) -> None:
        try:
            result = self._execute(job)
        except Exception as error:
            self.replies.error(job.id, error, _STAGES.get(job.method, "other"))
        else:
            self.replies.result(job.id, result)
        finally:
            self._done(job)

    def _admit(self, jobs: list[Job]) -> None:
        """Offers queued generations to the batch together, with those that arrive while they are prepared (into an
        idle batch, also those that arrive within ADMISSION_WAIT_S after its queue is found empty, and one whose
        frame is being read then, up to READING_WAIT_S). Those
        it does not take run alone once the batch has drained: a request longer than the fast path's window, then
        the first that it does not accept (beam search, stop strings), whose followers go back to the queue so that
        nothing after it starts before it."""
        batch = self.engine.batch
        assert batch is not None
        offered: list[tuple[Job, Admission]] = []
        refused: list[Job] = []

        def offer(candidates: list[Job]) -> list[Admission]:
            added: list[Admission] = []
            for index, job in enumerate(candidates):
                try:
                    params = parse_generate(job.params, len(job.payload))
                except Exception as error:
                    self.replies.error(job.id, error, "generate")
                    self._done(job)
                    continue
                if not batch.accepts(params):
                    refused.append(job)
                    self._put_back(candidates[index + 1 :])
                    break
                admission = (params, job.payload, self.replies.token(job.id), job.cancel, self._finisher(job))
                offered.append((job, admission))
                added.append(admission)
            return added

        idle = not batch.busy

        def later(room: int) -> list[Admission]:
            if refused:  # what follows a refused request waits for it
                return []
            with self._lock:
                if self._stopping:
                    return []
                arrived = self._arrivals(room, idle)
                for job in arrived:
                    self._running[job.id] = job
            return offer(arrived)

        first = offer(jobs)
        try:
            outcomes = batch.admit_many(first, later) if first else []
        except Exception as error:
            outcomes = [error] * len(offered)
        alone: list[Job] = []
        for (job, _), outcome in zip(offered, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.replies.error(job.id, outcome, "generate")
                self._done(job)
            elif not outcome:
                alone.append(job)
        for job in [*alone, *refused]:
            while batch.busy:
                self._step_batch()
            self._run_alone(job)

    def _arrivals(self, room: int, idle: bool) -> list[Job]:
        """Generations that arrived while an admission prepared its requests, up to `room` (lock held). Only an idle
        batch waits for more: a running one would stall its decode."""
        arrived = self._following_generations(room)
        if not arrived and idle and not self._queue and not self._stopping:
            self._lock.wait_for(self._arrived_or_being_read, ADMISSION_WAIT_S)
            if self._reading_generation:
                self._lock.wait_for(self._read_to_its_end, READING_WAIT_S)
            if not self._stopping:
                arrived = self._following_generations(room)
        return arrived

    def _arrived_or_being_read(self) -> bool:
        return bool(self._queue) or self._stopping or self._reading_generation

    def _read_to_its_end(self) -> bool:
        return bool(self._queue) or self._stopping or not self._reading_generation

    def _step_batch(self) -> None:
        batch = self.engine.batch
        if batch is None:
            return
        try:
            batch.step()
        except Exception as error:
            # A failed step leaves every running sequence's cache unknown: end them all with the error.
            batch.cancel_all(error)

    def _finisher(self, job: Job) -> Callable[[Any, BaseException | None], None]:
        def finish(result: Any, error: BaseException | None) -> None:
            if error is not None:
                self.replies.error(job.id, error, "generate")
            else:
                self.replies.result(job.id, result.to_wire())
            self._done(job)

        return finish

    def _done(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.id, None)

    def _execute(self, job: Job) -> dict[str, Any]:
        engine = self.engine
        if job.method == "ping":
            return {"pong": True}
        if job.method == "info":
            return self._info(engine.describe()) if self._info else {}
        if job.method == "load":
            loaded = engine.load(parse_load(job.params), job.cancel, self.replies.progress(job.id))
            _record_sources()
            return loaded
        if job.method == "releaseMemory":
            return engine.release_memory()
        params = parse_generate(job.params, len(job.payload))
        return engine.generate(params, job.payload, self.replies.token(job.id), job.cancel).to_wire()


def _record_sources() -> None:
    """The sources imported by a load, for the SDK's bytecode folder where it asked for them (bytecode/): a failure
    costs later starts only time, so it is reported on stderr and the load stands."""
    try:
        record_sources()
    except OSError as error:
        print(f"idefics2 worker: could not list the imported sources for the bytecode folder: {error}", file=sys.stderr)
