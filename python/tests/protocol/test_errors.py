"""One function maps every exception to the protocol's error object."""

from __future__ import annotations

import pytest

from idefics2_worker.protocol.errors import WorkerError, to_protocol_error


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("error", "stage", "code"),
    [
        (OSError("Incorrect path_or_model_id: 'nope'"), "load", "MODEL_NOT_FOUND"),
        (MemoryError(), "generate", "OUT_OF_MEMORY"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"), "load", "OUT_OF_MEMORY"),
        (ImportError("Using `bitsandbytes` 8-bit quantization requires it"), "load", "MISSING_PYTHON_PACKAGE"),
        (ModuleNotFoundError("No module named 'accelerate'", name="accelerate"), "load", "MISSING_PYTHON_PACKAGE"),
        (AssertionError("Torch not compiled with CUDA enabled"), "load", "CUDA_UNAVAILABLE"),
        (ValueError("unexpected config"), "load", "MODEL_LOAD_FAILED"),
        (ValueError("shape mismatch"), "generate", "GENERATION_FAILED"),
        (OSError("disk hiccup"), "generate", "GENERATION_FAILED"),
    ],
)
def test_each_kind_of_failure_gets_its_code(error: BaseException, stage: str, code: str) -> None:
    assert to_protocol_error(raised(error), stage)["code"] == code  # type: ignore[arg-type]


def test_missing_safetensors_says_pickle_weights_are_refused() -> None:
    error = OSError("Error no file named model.safetensors found in directory /models/bin-only.")
    body = to_protocol_error(raised(error), "load")
    assert body["code"] == "MODEL_NOT_FOUND"
    assert "safetensors only" in body["fix"]
    assert "model.safetensors" in body["message"]


def test_out_of_memory_from_torch_is_out_of_memory_with_a_fix() -> None:
    import torch

    body = to_protocol_error(raised(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")), "load")
    assert body["code"] == "OUT_OF_MEMORY"
    assert "4bit" in body["fix"]
    assert body["pythonType"] == "torch.OutOfMemoryError"


def test_a_worker_error_keeps_its_code_message_and_fix() -> None:
    body = to_protocol_error(raised(WorkerError("CONTEXT_OVERFLOW", "too long", "shorter")), "generate")
    assert (body["code"], body["message"], body["fix"]) == ("CONTEXT_OVERFLOW", "too long", "shorter")


def test_the_message_is_one_line_and_the_traceback_has_its_own_field() -> None:
    body = to_protocol_error(raised(ValueError("first line\n  second line\n\nthird")), "generate")
    assert body["message"] == "first line second line third"
    assert body["pythonType"] == "ValueError"
    assert body["traceback"].startswith("Traceback (most recent call last)")
    assert "ValueError: first line" in body["traceback"]


def test_a_huge_message_is_bounded() -> None:
    assert len(to_protocol_error(ValueError("x" * 50_000))["message"]) <= 1000


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


def test_an_exception_whose_text_cannot_be_made_still_maps_to_an_error_object() -> None:
    body = to_protocol_error(raised(_UnprintableError()), "generate")
    assert (body["code"], body["message"]) == ("GENERATION_FAILED", "_UnprintableError")


def test_the_error_for_an_unsendable_reply_is_ascii_and_names_the_failure() -> None:
    from idefics2_worker.protocol.errors import unsendable_reply

    body = unsendable_reply(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert body["code"] == "GENERATION_FAILED"
    assert body["message"].isascii()
    assert body["message"].startswith("The worker could not encode its reply (UnicodeEncodeError): ")
