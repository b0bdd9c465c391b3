"""The worker as the SDK sees it: a subprocess speaking frames, with the tiny model loaded once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import torch
from conftest import TINY_MODEL, load_params
from demo_inputs import generate_params
from worker_process import WorkerProcess


@pytest.fixture(scope="module")
def loaded(worker: WorkerProcess) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events, frame = worker.call("load", load_params(), timeout=120)
    assert frame["type"] == "result", frame
    return frame["result"], events


def test_ready_is_the_first_frame_and_names_the_protocol_and_versions(worker: WorkerProcess) -> None:
    ready = worker.ready
    assert ready["type"] == "ready"
    assert ready["protocol"] == 1
    assert ready["pid"] == worker.proc.pid
    assert {"python", "torch", "transformers", "pillow"} <= set(ready["versions"])


def test_load_reports_the_tiny_model_and_streams_progress(loaded: tuple[dict[str, Any], list[Any]]) -> None:
    result, events = loaded
    assert result["model"] == str(TINY_MODEL)
    assert result["quantization"] == "none"
    assert result["device"] == "cpu"
    assert result["imageSeqLen"] == 8
    assert result["imageTokenId"] == 860
    assert result["eosTokenIds"] == [2, 861]
    assert result["maxContext"] == 4096
    assert result["doImageSplitting"] is True
    processor_config = json.loads((TINY_MODEL / "processor_config.json").read_text())
    assert result["longestEdge"] == processor_config["image_processor"]["size"]["longest_edge"]
    stages = [event["data"]["stage"] for event in events if "done" not in event["data"]]
    assert stages[-2:] == ["processor", "model"]
    # Then transformers' "Loading weights" bar as counts: every tensor of the tiny model, from 0 to all of them.
    counts = [event["data"] for event in events if "done" in event["data"]]
    assert counts[0] == {
        "stage": "model",
        "message": f"Loading the weights of {TINY_MODEL}",
        "done": 0,
        "total": 92,
        "unit": "items",
    }
    assert counts[-1]["done"] == counts[-1]["total"] == 92
    assert [count["done"] for count in counts] == sorted({count["done"] for count in counts})


def test_ping_answers_pong(worker: WorkerProcess) -> None:
    _, frame = worker.call("ping", timeout=10)
    assert frame == {"type": "result", "id": frame["id"], "result": {"pong": True}, "__payload__": b""}


def test_streamed_token_deltas_concatenate_to_the_result_text(worker: WorkerProcess, loaded: object) -> None:
    params, payload = generate_params(12)
    events, frame = worker.call("generate", params, payload)
    assert frame["type"] == "result", frame
    result = frame["result"]
    assert all(event["event"] == "token" for event in events)
    assert "".join(event["data"]["text"] for event in events) == result["text"]
    assert [i for event in events for i in event["data"]["tokenIds"]] == result["tokenIds"]
    assert result["finishReason"] in ("stop", "length")
    usage = result["usage"]
    assert usage["imageTokens"] == 2 * 5 * 8  # two pictures, split into 4 + 1, 8 latents each
    assert usage["completionTokens"] == len(result["tokenIds"])
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    assert set(result["timings"]) == {"preprocessMs", "prefillMs", "decodeMs", "totalMs", "decodeTokensPerSecond"}


def test_an_image_count_mismatch_is_invalid_messages_and_the_worker_still_serves(
    worker: WorkerProcess, loaded: object
) -> None:
    params, payload = generate_params(4)
    params["images"] = params["images"][:1]
    _, frame = worker.call("generate", params, payload)
    assert frame["type"] == "error"
    assert frame["error"]["code"] == "INVALID_MESSAGES"
    assert "2 image part(s) but 1 image(s)" in frame["error"]["message"]
    _, pong = worker.call("ping", timeout=10)
    assert pong["result"] == {"pong": True}


def test_an_invalid_option_is_invalid_options_naming_the_option(worker: WorkerProcess, loaded: object) -> None:
    params, payload = generate_params(4, topP=1.5)
    _, frame = worker.call("generate", params, payload)
    assert frame["error"]["code"] == "INVALID_OPTIONS"
    assert "`topP`" in frame["error"]["message"]
    assert "1.5" in frame["error"]["message"]


@pytest.mark.timeout(90)
def test_cancel_mid_generation_ends_it_with_aborted_and_the_next_request_works(
    worker: WorkerProcess, loaded: object
) -> None:
    # minNewTokens keeps EOS away, so only the cancel can end this generation early.
    params, payload = generate_params(400, minNewTokens=400)
    request_id = worker.request("generate", params, payload)
    first = worker.next_frame(timeout=30)
    assert (first["id"], first["event"]) == (request_id, "token")
    worker.send({"type": "cancel", "id": request_id})
    started = time.monotonic()
    events, frame = worker.frames_for(request_id, timeout=30)
    assert time.monotonic() - started < 5
    assert frame["type"] == "error"
    assert frame["error"]["code"] == "ABORTED"
    assert len(events) < 399
    _, after = worker.call("generate", *generate_params(3))
    assert after["type"] == "result"
    assert after["result"]["usage"]["completionTokens"] == 3


@pytest.mark.timeout(90)
def test_cancel_of_a_queued_request_drops_it_at_once_with_aborted(worker: WorkerProcess, loaded: object) -> None:
    running = worker.request("generate", *generate_params(400, minNewTokens=400))
    queued = worker.request("generate", *generate_params(3))
    worker.send({"type": "cancel", "id": queued})
    events, frame = worker.frames_for(queued, timeout=10)
    assert events == []
    assert frame["type"] == "error"
    assert frame["error"]["code"] == "ABORTED"
    worker.send({"type": "cancel", "id": running})
    _, running_frame = worker.frames_for(running, timeout=30)
    assert running_frame["error"]["code"] == "ABORTED"
    _, pong = worker.call("ping", timeout=10)
    assert pong["result"] == {"pong": True}


def test_an_unknown_method_is_a_protocol_error_for_that_request(worker: WorkerProcess) -> None:
    _, frame = worker.call("teleport", timeout=10)
    assert frame["type"] == "error"
    assert frame["error"]["code"] == "PROTOCOL_ERROR"
    assert "teleport" in frame["error"]["message"]


def test_info_reports_versions_cuda_bitsandbytes_and_the_loaded_model(worker: WorkerProcess, loaded: object) -> None:
    _, frame = worker.call("info", timeout=30)
    info = frame["result"]
    assert info["cuda"]["available"] == torch.cuda.is_available()
    assert len(info["cuda"]["devices"]) == torch.cuda.device_count()
    assert info["bitsandbytes"]["backend"] == ("CUDA" if torch.cuda.is_available() else "CPU")
    assert info["model"]["model"] == str(TINY_MODEL)
    assert info["versions"]["transformers"] == "5.17.0"


def test_a_missing_model_is_model_not_found_with_a_fix(worker: WorkerProcess) -> None:
    _, frame = worker.call("load", load_params(model=str(TINY_MODEL) + "-missing"), timeout=30)
    assert frame["type"] == "error"
    error = frame["error"]
    assert error["code"] == "MODEL_NOT_FOUND"
    assert error["fix"]
    assert "\n" not in error["message"]


def test_beam_search_sends_the_whole_text_in_one_event_at_the_end(worker: WorkerProcess, loaded: object) -> None:
    events, frame = worker.call("generate", *generate_params(4, numBeams=2))
    assert frame["type"] == "result", frame
    result = frame["result"]
    assert [(e["data"]["text"], e["data"]["tokenIds"]) for e in events] == [(result["text"], result["tokenIds"])]


def test_a_stop_string_ends_generation_with_finish_reason_stop_string(worker: WorkerProcess, loaded: object) -> None:
    _, plain = worker.call("generate", *generate_params(12))
    # The trained tiny model answers the demo conversation with the second picture's colour, then more words.
    text = plain["result"]["text"]
    stop = "blue"
    assert stop in text, text
    assert not text.endswith(stop), text
    _, frame = worker.call("generate", *generate_params(12, stopStrings=[stop]))
    result = frame["result"]
    assert result["finishReason"] == "stop_string"
    assert result["text"].endswith(stop)
    assert len(result["tokenIds"]) < len(plain["result"]["tokenIds"])


def test_sampling_with_a_seed_is_repeatable(worker: WorkerProcess, loaded: object) -> None:
    texts = [
        worker.call("generate", *generate_params(6, doSample=True, temperature=1.5, seed=7))[1]["result"]["tokenIds"]
        for _ in range(2)
    ]
    assert texts[0] == texts[1]


def test_a_prompt_longer_than_the_context_is_context_overflow(worker: WorkerProcess, loaded: object) -> None:
    params, payload = generate_params(4)
    params["messages"][-1]["content"].append({"type": "text", "text": " word" * 5000})
    _, frame = worker.call("generate", params, payload)
    assert frame["error"]["code"] == "CONTEXT_OVERFLOW"
    assert "4096" in frame["error"]["message"]


def test_asking_for_a_cuda_device_that_does_not_exist_is_cuda_unavailable_and_keeps_the_model(
    worker: WorkerProcess, loaded: object
) -> None:
    # One past the last device: missing on every machine, with or without a GPU.
    _, frame = worker.call("load", load_params(deviceMap=f"cuda:{torch.cuda.device_count()}"), timeout=30)
    assert frame["error"]["code"] == "CUDA_UNAVAILABLE"
    assert frame["error"]["fix"]
    _, after = worker.call("generate", *generate_params(2))
    assert after["type"] == "result"
