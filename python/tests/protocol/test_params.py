"""Wire params are checked before any model work, and quantization defaults are the reference program's."""

from __future__ import annotations

from typing import Any

import pytest

from idefics2_worker.engine.quantization import quantization_config
from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.params import Quantization, parse_generate, parse_load

IMAGE = {"offset": 0, "length": 12, "width": 2, "height": 2}
USER_WITH_IMAGE = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which city?"}]}


def generate(options: dict[str, Any] | None = None, **overrides: Any) -> Any:
    params = {"messages": [USER_WITH_IMAGE], "images": [IMAGE], "options": {"maxNewTokens": 5, **(options or {})}}
    return parse_generate(params | overrides, payload_size=12)


def failure(call: Any) -> WorkerError:
    with pytest.raises(WorkerError) as raised:
        call()
    return raised.value


def test_null_options_are_left_out_so_the_generation_config_decides() -> None:
    parsed = generate({"temperature": None, "topK": None, "seed": None, "stopStrings": None})
    assert parsed.generate_kwargs == {"max_new_tokens": 5}
    assert parsed.seed is None


def test_given_options_become_transformers_generate_kwargs() -> None:
    options = {"doSample": True, "temperature": 0.7, "topP": 0.9, "topK": 50, "numBeams": 1, "stopStrings": ["."]}
    parsed = generate(options | {"seed": 3})
    assert parsed.generate_kwargs == {
        "max_new_tokens": 5,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 50,
        "num_beams": 1,
        "stop_strings": ["."],
    }
    assert parsed.seed == 3


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("maxNewTokens", 0),
        ("maxNewTokens", 2.5),
        ("temperature", 0),
        ("temperature", True),
        ("topP", 1.5),
        ("numBeams", 0),
        ("seed", -1),
        ("stopStrings", []),
        ("stopStrings", [""]),
        ("doSample", "yes"),
    ],
)
def test_an_insane_option_is_invalid_options_naming_it_and_the_value(option: str, value: Any) -> None:
    error = failure(lambda: generate({option: value}))
    assert error.code == "INVALID_OPTIONS"
    assert f"`{option}`" in error.message
    assert repr(value) in error.message


def test_an_unknown_option_is_invalid_options() -> None:
    error = failure(lambda: generate({"maxTokens": 5}))
    assert (error.code, "maxTokens" in error.message) == ("INVALID_OPTIONS", True)


def test_more_image_parts_than_images_is_invalid_messages_with_both_counts() -> None:
    two_parts = {"role": "user", "content": [{"type": "image"}, {"type": "image"}]}
    error = failure(lambda: generate(messages=[two_parts]))
    assert error.code == "INVALID_MESSAGES"
    assert "2 image part(s) but 1 image(s)" in error.message


@pytest.mark.parametrize("role", ["tool", "User", None])
def test_a_role_outside_user_assistant_system_is_invalid_messages(role: Any) -> None:
    error = failure(lambda: generate(messages=[{"role": role, "content": [{"type": "text", "text": "hi"}]}]))
    assert error.code == "INVALID_MESSAGES"
    assert "role" in error.message


def test_an_image_whose_bytes_do_not_match_its_size_is_unreadable() -> None:
    error = failure(lambda: generate(images=[{**IMAGE, "length": 11}]))
    assert error.code == "IMAGE_UNREADABLE"
    error = failure(lambda: generate(images=[{**IMAGE, "offset": 1}]))
    assert "payload has 12 bytes" in error.message


def test_load_defaults_are_the_reference_programs() -> None:
    parsed = parse_load({"model": "HuggingFaceM4/idefics2-8b"})
    assert (parsed.device_map, parsed.dtype, parsed.quantization.mode) == ("auto", "auto", "none")
    assert (parsed.trust_remote_code, parsed.local_files_only, parsed.attn_implementation) == (False, False, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("dtype", "float8"), ("attnImplementation", "magic"), ("deviceMap", ""), ("longestEdge", 0), ("model", "")],
)
def test_a_bad_load_field_is_invalid_options_naming_it(field: str, value: Any) -> None:
    error = failure(lambda: parse_load({"model": "m", field: value}))
    assert error.code == "INVALID_OPTIONS"
    assert f"`{field}`" in error.message


@pytest.mark.parametrize("device_map", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_map_is_a_device_string(device_map: str) -> None:
    assert parse_load({"model": "m", "deviceMap": device_map}).device_map == device_map


@pytest.mark.parametrize("device_map", [{"": "cpu"}, {"model.vision_model": 0}, "cuda:01", "cuda:-1", "gpu", None])
def test_a_module_to_device_object_or_another_device_string_is_refused(device_map: Any) -> None:
    error = failure(lambda: parse_load({"model": "m", "deviceMap": device_map}))
    assert (error.code, "`deviceMap`" in error.message) == ("INVALID_OPTIONS", True)


def test_a_seed_goes_up_to_the_largest_integer_a_js_number_holds_exactly() -> None:
    assert generate({"seed": 2**53 - 1}).seed == 2**53 - 1
    error = failure(lambda: generate({"seed": 2**53}))
    assert (error.code, "`seed`" in error.message) == ("INVALID_OPTIONS", True)


def test_a_key_left_out_takes_its_default_but_null_is_refused_where_the_contract_has_no_null() -> None:
    assert parse_load({"model": "m"}).max_batch_size == 8
    for field in ("dtype", "deviceMap", "decoder", "maxBatchSize", "trustRemoteCode", "quantization"):
        error = failure(lambda field=field: parse_load({"model": "m", field: None}))
        assert (error.code, field in error.message) == ("INVALID_OPTIONS", True)


def test_max_new_tokens_is_required() -> None:
    error = failure(lambda: parse_generate({"messages": [USER_WITH_IMAGE], "images": [IMAGE], "options": {}}, 12))
    assert (error.code, "`maxNewTokens` is required" in error.message) == ("INVALID_OPTIONS", True)


def test_a_malformed_image_entry_is_invalid_messages_naming_its_field() -> None:
    error = failure(lambda: generate(images=[{**IMAGE, "width": 2.0}]))
    assert (error.code, "`images[0].width`" in error.message) == ("INVALID_MESSAGES", True)


def test_default_quantization_configs_equal_the_reference_programs() -> None:
    from transformers import BitsAndBytesConfig

    assert quantization_config(Quantization("none")) is None
    eight = quantization_config(Quantization("8bit", int8_threshold=6.0))
    assert eight.to_dict() == BitsAndBytesConfig(load_in_8bit=True).to_dict()
    four = quantization_config(Quantization("4bit", quant_type="fp4"))
    assert four.to_dict() == BitsAndBytesConfig(load_in_4bit=True).to_dict()


def test_quantization_options_reach_bits_and_bytes_config() -> None:
    import torch

    quant = {"mode": "4bit", "quantType": "nf4", "doubleQuant": True, "computeDtype": "bfloat16"}
    quant["skipModules"] = ["lm_head"]
    config = quantization_config(parse_load({"model": "m", "quantization": quant}).quantization)
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert config.llm_int8_skip_modules == ["lm_head"]
    eight = {"mode": "8bit", "int8Threshold": 4.0, "skipModules": ["vision_model"]}
    config = quantization_config(parse_load({"model": "m", "quantization": eight}).quantization)
    assert (config.llm_int8_threshold, config.llm_int8_skip_modules) == (4.0, ["vision_model"])


def test_reserve_new_tokens_defaults_to_false_and_must_be_a_boolean() -> None:
    raw = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "options": {"maxNewTokens": 4}}
    assert parse_generate(raw, 0).reserve_new_tokens is False
    assert parse_generate({**raw, "reserveNewTokens": True}, 0).reserve_new_tokens is True
    with pytest.raises(WorkerError) as raised:
        parse_generate({**raw, "reserveNewTokens": "yes"}, 0)
    assert raised.value.code == "INVALID_MESSAGES"
    assert "reserveNewTokens" in raised.value.message


def test_max_memory_becomes_accelerates_max_memory_in_bytes() -> None:
    parsed = parse_load({"model": "m", "maxMemory": {"0": "10GiB", "1": "1.5GB", "cpu": 4096}})
    assert parsed.max_memory_kwarg() == {0: 10 * 2**30, 1: 1_500_000_000, "cpu": 4096}


@pytest.mark.parametrize(
    ("size", "expected"), [("1KiB", 1024), ("2MiB", 2 * 2**20), ("3KB", 3000), ("0.5MB", 500_000), (0, 0)]
)
def test_each_of_accelerates_units_is_understood(size: Any, expected: int) -> None:
    assert parse_load({"model": "m", "maxMemory": {"cpu": size}}).max_memory_kwarg() == {"cpu": expected}


def test_no_max_memory_and_an_empty_one_leave_accelerates_limits() -> None:
    assert parse_load({"model": "m"}).max_memory_kwarg() is None
    assert parse_load({"model": "m", "maxMemory": None}).max_memory_kwarg() is None
    assert parse_load({"model": "m", "maxMemory": {}}).max_memory_kwarg() is None


@pytest.mark.parametrize("device", ["01", "-1", "cuda:0", "gpu", "disk", "mps", "CPU", " 0", "0\n"])
def test_a_max_memory_key_that_is_no_cuda_index_or_cpu_is_refused(device: str) -> None:
    error = failure(lambda: parse_load({"model": "m", "maxMemory": {device: "1GiB"}}))
    assert (error.code, "`maxMemory`" in error.message) == ("INVALID_OPTIONS", True)


@pytest.mark.parametrize(
    "size", ["10gib", "10Gb", "10 GiB", "GiB", "1e3GiB", "-1GiB", "10", "", -1, 1.5, True, None, 2**53]
)
def test_a_max_memory_size_that_is_no_byte_count_or_number_with_a_unit_is_refused(size: Any) -> None:
    error = failure(lambda: parse_load({"model": "m", "maxMemory": {"0": size}}))
    assert (error.code, "`maxMemory.0`" in error.message) == ("INVALID_OPTIONS", True)


@pytest.mark.parametrize("device_map", ["cpu", "cuda", "cuda:1"])
def test_max_memory_is_refused_with_a_device_map_other_than_auto(device_map: str) -> None:
    error = failure(lambda: parse_load({"model": "m", "deviceMap": device_map, "maxMemory": {"cpu": "1GiB"}}))
    assert error.code == "INVALID_OPTIONS"
    assert "`maxMemory`" in error.message
    assert repr(device_map) in error.message
    assert error.fix
