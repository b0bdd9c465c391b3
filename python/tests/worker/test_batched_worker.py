"""The worker with the fast decoder: generations sent together run in one batch, each with its own answer; those
queued together are also prefilled together."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import load_params
from demo_inputs import as_payload, demo_images, generate_params
from worker_process import WorkerProcess

DEMO_ANSWER = "That is a blue square."


@pytest.fixture(scope="module")
def fast_worker() -> Iterator[WorkerProcess]:
    process = WorkerProcess()
    process.next_frame(timeout=30)
    _, loaded = process.call("load", load_params(decoder="fast", maxBatchSize=4), timeout=90)
    assert loaded["type"] == "result", loaded
    assert loaded["result"]["decoder"] == "fast"
    assert loaded["result"]["maxBatchSize"] == 4
    yield process
    process.stop()


def text_params(question: str, **options: Any) -> tuple[dict[str, Any], bytes]:
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    return {"messages": messages, "images": [], "options": {"maxNewTokens": 24, **options}, "stream": True}, b""


def one_image_params(**options: Any) -> tuple[dict[str, Any], bytes]:
    specs, payload = as_payload(demo_images()[1:])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    return {"messages": messages, "images": specs, "options": {"maxNewTokens": 24, **options}, "stream": True}, payload


@pytest.mark.timeout(120)
def test_requests_sent_together_each_get_the_answer_they_get_alone(fast_worker: WorkerProcess) -> None:
    requests = [generate_params(24), text_params("Tell me about squares."), one_image_params(), generate_params(24)]
    alone = []
    for params, payload in requests:
        _, frame = fast_worker.call("generate", params, payload, timeout=60)
        assert frame["type"] == "result", frame
        alone.append(frame["result"])
    assert alone[0]["text"] == DEMO_ANSWER

    ids = [fast_worker.request("generate", params, payload) for params, payload in requests]
    together = []
    for request_id in ids:
        events, frame = fast_worker.frames_for(request_id, timeout=60)
        assert frame["type"] == "result", frame
        together.append(frame["result"])
        assert "".join(e["data"]["text"] for e in events) == frame["result"]["text"]
    for before, after in zip(alone, together, strict=True):
        assert after["tokenIds"] == before["tokenIds"]
        assert after["usage"] == before["usage"]


@pytest.mark.timeout(120)
def test_requests_queued_behind_a_load_are_admitted_together_and_a_bad_one_fails_alone(
    fast_worker: WorkerProcess,
) -> None:
    requests = [generate_params(24), text_params("Tell me about squares."), one_image_params()]
    alone = []
    for params, payload in requests:
        _, frame = fast_worker.call("generate", params, payload, timeout=60)
        assert frame["type"] == "result", frame
        alone.append(frame["result"])
    specs, payload = as_payload([demo_images()[1].resize((5, 1))])  # 1 pixel tall: the processor cannot split it
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    unreadable = ({"messages": messages, "images": specs, "options": {"maxNewTokens": 24}}, payload)
    # While the load runs the generations wait in the queue; then the model thread takes them all at once.
    reload = fast_worker.request("load", load_params(decoder="fast", maxBatchSize=4))
    ids = [fast_worker.request("generate", *request) for request in [requests[0], unreadable, *requests[1:]]]
    _, load_frame = fast_worker.frames_for(reload, timeout=90)
    assert load_frame["type"] == "result", load_frame
    frames = [fast_worker.frames_for(request_id, timeout=60)[1] for request_id in ids]
    assert frames[1]["type"] == "error"
    assert frames[1]["error"]["code"] == "IMAGE_UNREADABLE"
    for before, after in zip(alone, [frames[0], *frames[2:]], strict=True):
        assert after["type"] == "result", after
        assert after["result"]["tokenIds"] == before["tokenIds"]
        assert after["result"]["usage"] == before["usage"]


@pytest.mark.timeout(120)
def test_cancel_ends_one_batched_request_and_the_others_finish(fast_worker: WorkerProcess) -> None:
    doomed = fast_worker.request("generate", *generate_params(300, minNewTokens=300))
    survivor = fast_worker.request("generate", *generate_params(24))
    first = fast_worker.next_frame(timeout=30)
    fast_worker._backlog.append(first)
    fast_worker.send({"type": "cancel", "id": doomed})
    _, doomed_frame = fast_worker.frames_for(doomed, timeout=30)
    assert doomed_frame["type"] == "error"
    assert doomed_frame["error"]["code"] == "ABORTED"
    _, survivor_frame = fast_worker.frames_for(survivor, timeout=30)
    assert survivor_frame["result"]["text"] == DEMO_ANSWER


@pytest.mark.timeout(120)
def test_a_load_waits_for_the_batch_and_later_requests_use_the_new_model(fast_worker: WorkerProcess) -> None:
    running = fast_worker.request("generate", *generate_params(40, minNewTokens=40))
    reload = fast_worker.request("load", load_params(decoder="fast", maxBatchSize=4, doImageSplitting=False))
    after = fast_worker.request("generate", *generate_params(24))
    _, running_frame = fast_worker.frames_for(running, timeout=60)
    assert running_frame["type"] == "result"
    assert running_frame["result"]["usage"]["completionTokens"] == 40
    _, load_frame = fast_worker.frames_for(reload, timeout=90)
    assert load_frame["result"]["doImageSplitting"] is False
    _, after_frame = fast_worker.frames_for(after, timeout=60)
    # Without splitting each image is one sub-image: fewer image tokens than the 2 x 5 x 8 with splitting.
    assert after_frame["result"]["usage"]["imageTokens"] == 16
    _, restore = fast_worker.call("load", load_params(decoder="fast", maxBatchSize=4), timeout=90)
    assert restore["type"] == "result"


@pytest.mark.timeout(120)
def test_beam_search_and_stop_strings_run_through_generate_beside_a_batch(fast_worker: WorkerProcess) -> None:
    running = fast_worker.request("generate", *generate_params(30, minNewTokens=30))
    beams = fast_worker.request("generate", *generate_params(24, numBeams=2))
    stop = fast_worker.request("generate", *generate_params(24, stopStrings=["blue"]))
    _, running_frame = fast_worker.frames_for(running, timeout=60)
    assert running_frame["type"] == "result"
    _, beams_frame = fast_worker.frames_for(beams, timeout=60)
    assert beams_frame["type"] == "result", beams_frame
    assert beams_frame["result"]["text"] == DEMO_ANSWER
    _, stop_frame = fast_worker.frames_for(stop, timeout=60)
    assert stop_frame["result"]["finishReason"] == "stop_string"
    assert stop_frame["result"]["text"] == "That is a blue"


@pytest.mark.timeout(60)
def test_a_bad_request_in_a_batch_fails_alone(fast_worker: WorkerProcess) -> None:
    running = fast_worker.request("generate", *generate_params(30, minNewTokens=30))
    bad = fast_worker.request("generate", *generate_params(24, topP=2.0))
    _, bad_frame = fast_worker.frames_for(bad, timeout=30)
    assert bad_frame["error"]["code"] == "INVALID_OPTIONS"
    _, running_frame = fast_worker.frames_for(running, timeout=60)
    assert running_frame["result"]["usage"]["completionTokens"] == 30
