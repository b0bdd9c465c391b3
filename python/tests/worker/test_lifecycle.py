"""Process lifecycle: stdin EOF and `shutdown` exit 0 promptly, and only frames ever reach stdout."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_MODEL, load_params
from demo_inputs import generate_params
from worker_process import WorkerProcess

# Model code that writes to stdout every way it can: print at import, print and a raw fd-1 write per forward.
NOISY_MODELING = """
import functools
import os
import sys

from transformers import Idefics2ForConditionalGeneration

print("noisy: imported")


class NoisyIdefics2(Idefics2ForConditionalGeneration):
    @functools.wraps(Idefics2ForConditionalGeneration.forward)
    def forward(self, *args, **kwargs):
        print("noisy: forward")
        print("noisy: to sys.__stdout__", file=sys.__stdout__, flush=True)
        os.write(1, b"noisy: raw write to fd 1\\n")
        return super().forward(*args, **kwargs)
"""


def test_stdin_eof_on_an_idle_worker_exits_0_promptly() -> None:
    process = WorkerProcess()
    try:
        assert process.next_frame(timeout=30)["type"] == "ready"
        process.close_stdin()
        started = time.monotonic()
        assert process.proc.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        process.stop()


def test_a_shutdown_frame_exits_0_after_answering_what_came_before() -> None:
    process = WorkerProcess()
    try:
        assert process.next_frame(timeout=30)["type"] == "ready"
        request_id = process.request("ping")
        process.send({"type": "shutdown"})
        _, frame = process.frames_for(request_id, timeout=10)
        assert frame["type"] in ("result", "error")
        assert process.proc.wait(10) == 0
    finally:
        process.stop()


@pytest.fixture(scope="module")
def noisy_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, Path]]:
    model_dir = tmp_path_factory.mktemp("noisy-model")
    for item in TINY_MODEL.iterdir():
        shutil.copy(item, model_dir / item.name)
    (model_dir / "noisy_idefics2.py").write_text(NOISY_MODELING)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "noisy_idefics2.NoisyIdefics2"}
    (model_dir / "config.json").write_text(json.dumps(config))
    modules = tmp_path_factory.mktemp("hf-modules")
    process = WorkerProcess(extra_env={"HF_MODULES_CACHE": str(modules)})
    assert process.next_frame(timeout=30)["type"] == "ready"
    yield process, model_dir
    process.stop()


@pytest.mark.timeout(120)
def test_stdout_carries_only_frames_even_when_model_code_prints(noisy_worker: tuple[WorkerProcess, Path]) -> None:
    process, model_dir = noisy_worker
    _, loaded = process.call("load", load_params(model=str(model_dir), trustRemoteCode=True), timeout=90)
    assert loaded["type"] == "result", loaded
    events, frame = process.call("generate", *generate_params(3), timeout=60)
    assert frame["type"] == "result", frame
    assert len(events) == frame["result"]["usage"]["completionTokens"]
    # The reader thread parses stdout strictly, so reaching here means no stray byte got in; the text went to stderr.
    stderr = process.stderr_tail(200_000)
    for line in ("noisy: imported", "noisy: forward", "noisy: to sys.__stdout__", "noisy: raw write to fd 1"):
        assert line in stderr


@pytest.mark.timeout(60)
def test_stdin_eof_during_a_generation_stops_it_and_exits_0_promptly(noisy_worker: tuple[WorkerProcess, Path]) -> None:
    process, _ = noisy_worker
    request_id = process.request("generate", *generate_params(400, minNewTokens=400))
    first = process.next_frame(timeout=30)
    assert (first["id"], first["event"]) == (request_id, "token")
    process.close_stdin()
    started = time.monotonic()
    assert process.proc.wait(15) == 0
    assert time.monotonic() - started < 5
