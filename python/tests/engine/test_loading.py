"""The checks before a load: a device that cannot be had, or a local folder that is not there, is refused first."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL

from idefics2_worker.engine.loading import check_load
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
