"""The worker's tokens equal the reference program's `model.generate`, unquantized and with bitsandbytes on CPU."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TINY_MODEL, load_params
from demo_inputs import demo_images, demo_messages, generate_params
from worker_process import WorkerProcess

from idefics2_worker.engine.compat import expose_pil_image_processor, portable_cpu_four_bit
from idefics2_worker.engine.quantization import quantization_config
from idefics2_worker.protocol.params import Quantization

MAX_NEW_TOKENS = 10


def reference_generate(mode: str) -> tuple[list[int], str]:
    """The blog post's program on transformers 5, word for word apart from the two renamed calls and compat shims.

    Its BitsAndBytesConfig(load_in_8bit=True) / (load_in_4bit=True) comes from the worker's mapping, which
    tests/protocol/test_params.py holds equal to those calls.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    expose_pil_image_processor()  # this machine has no torchvision; see compat.py
    config = quantization_config(Quantization(mode))
    quantization = {"quantization_config": config} if config is not None else {}
    processor = AutoProcessor.from_pretrained(str(TINY_MODEL))
    model = AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL), device_map="auto", **quantization)
    portable_cpu_four_bit(model)  # the same bitsandbytes CPU path on every CPU; see compat.py
    prompt = processor.apply_chat_template(demo_messages(), add_generation_prompt=True)
    inputs = processor(text=prompt, images=demo_images(), return_tensors="pt")
    with torch.no_grad():
        generated_ids = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)
    new_ids = generated_ids[0, inputs["input_ids"].shape[-1] :].tolist()
    return new_ids, processor.batch_decode(generated_ids[:, inputs["input_ids"].shape[-1] :], skip_special_tokens=True)[
        0
    ]


def until_stop(ids: list[int], stop_ids: list[int]) -> list[int]:
    """The reference stops only on EOS; the worker also stops on <end_of_utterance>, so compare up to it."""
    for index, token in enumerate(ids):
        if token in stop_ids:
            return ids[: index + 1]
    return ids


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["none", "8bit", "4bit"])
def test_the_worker_generates_the_reference_programs_token_ids(worker: WorkerProcess, mode: str) -> None:
    _, loaded = worker.call("load", load_params(mode), timeout=90)
    assert loaded["type"] == "result", loaded
    assert loaded["result"]["quantization"] == mode
    events, frame = worker.call("generate", *generate_params(MAX_NEW_TOKENS), timeout=90)
    assert frame["type"] == "result", frame
    result: dict[str, Any] = frame["result"]

    reference_ids, _ = reference_generate(mode)
    expected = until_stop(reference_ids, loaded["result"]["eosTokenIds"])
    assert result["tokenIds"] == expected
    assert "".join(event["data"]["text"] for event in events) == result["text"]
