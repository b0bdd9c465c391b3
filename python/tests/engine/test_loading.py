"""The checks before a load: a device that cannot be had, or a local folder that is not there, is refused first."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from conftest import TINY_MODEL

from idefics2_worker.engine.loading import check_load, load_model
from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.params import parse_load

# One past the last device is missing everywhere; without CUDA, 'cuda' (device 0) is missing too.
MISSING = [f"cuda:{torch.cuda.device_count()}", *([] if torch.cuda.is_available() else ["cuda", "cuda:0"])]


@pytest.mark.parametrize("device_map", MISSING)
def test_a_cuda_device_map_needs_that_device(device_map: str) -> None:
    with pytest.raises(WorkerError) as raised:
        check_load(parse_load({"model": str(TINY_MODEL), "deviceMap": device_map}))
    assert raised.value.code == "CUDA_UNAVAILABLE"
    assert raised.value.fix


@pytest.mark.parametrize("device_map", ["auto", "cpu"])
def test_auto_and_cpu_pass_the_checks_for_a_folder_that_exists(device_map: str) -> None:
    check_load(parse_load({"model": str(TINY_MODEL), "deviceMap": device_map}))


def test_a_local_path_that_is_not_a_folder_is_model_not_found() -> None:
    with pytest.raises(WorkerError) as raised:
        check_load(parse_load({"model": "/no/such/model", "deviceMap": "cpu"}))
    assert raised.value.code == "MODEL_NOT_FOUND"


def test_max_memory_naming_a_cuda_device_torch_does_not_see_is_cuda_unavailable() -> None:
    missing = str(torch.cuda.device_count())
    with pytest.raises(WorkerError) as raised:
        check_load(parse_load({"model": str(TINY_MODEL), "maxMemory": {"cpu": "1GiB", missing: "1GiB"}}))
    assert raised.value.code == "CUDA_UNAVAILABLE"
    assert f"device {missing}" in raised.value.message
    assert raised.value.fix


def test_max_memory_of_the_cpu_alone_passes_the_checks() -> None:
    check_load(parse_load({"model": str(TINY_MODEL), "maxMemory": {"cpu": "1GiB"}}))


def test_max_memory_reaches_accelerates_placement() -> None:
    # 1,000 bytes of CPU leave accelerate nowhere but the disk for the weights: the limit was applied.
    def ignore(*_: Any, **__: Any) -> None:
        return None

    params = parse_load({"model": str(TINY_MODEL), "maxMemory": {"cpu": 1000}})
    loaded = load_model(params, threading.Event(), ignore)
    assert loaded.model.hf_device_map == {"": "disk"}
