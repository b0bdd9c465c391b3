"""Programmatic dependent launch (kernels/programmatic_launch.py): off where it cannot run and outside the decode
graphs, and the driver structs laid out as cuda.h lays them (the launch itself runs on a GPU:
scripts/gpu/profile_decode_step.py, check_deterministic.py)."""

from __future__ import annotations

import ctypes

import pytest
import torch

from idefics2_worker.kernels import programmatic_launch, triton_support
from idefics2_worker.kernels.programmatic_launch import _argument, _Attribute, _Config


def test_off_without_a_cuda_device() -> None:
    assert not programmatic_launch.supported(torch.device("cpu"))
    assert not programmatic_launch.enabled(torch.device("cpu"))
    assert programmatic_launch.triton_options(torch.device("cpu")) == {"PDL": False}


def test_launch_attribute_and_config_match_cuda_h() -> None:
    # CUlaunchAttribute: id, 4 bytes of padding, a 64-byte union; CUlaunchConfig: 7 uints, then the stream (8-byte
    # aligned), the attributes, their count.
    assert ctypes.sizeof(_Attribute) == 72
    assert _Attribute.value.offset == 8
    assert _Config.stream.offset == 32
    assert _Config.attributes.offset == 40
    assert _Config.attribute_count.offset == 48
    assert ctypes.sizeof(_Config) == 56


def test_arguments_are_pointers_and_ints_only() -> None:
    assert isinstance(_argument(7), ctypes.c_int)
    assert isinstance(_argument(torch.zeros(2)), ctypes.c_void_p)
    with pytest.raises(TypeError, match="float"):
        _argument(0.5)
    with pytest.raises(TypeError, match="bool"):
        _argument(True)


def test_only_inside_the_decode_graphs_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(programmatic_launch, "_capable", lambda index: True)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    cuda = torch.device("cuda", 0)
    assert not programmatic_launch.enabled(cuda)  # the prefill and eager steps: plain launches
    with programmatic_launch.decode_graph():
        assert programmatic_launch.enabled(cuda)
        with programmatic_launch.decode_graph():
            options = programmatic_launch.triton_options(cuda)
            assert options == {"PDL": triton_support.WAIT_FIRST, "launch_pdl": True}
        assert programmatic_launch.enabled(cuda)
        monkeypatch.setattr(programmatic_launch, "ENABLED", False)
        assert not programmatic_launch.enabled(cuda)
    monkeypatch.setattr(programmatic_launch, "ENABLED", True)
    assert not programmatic_launch.enabled(cuda)
