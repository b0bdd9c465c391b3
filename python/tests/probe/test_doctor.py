"""The doctor probe: what importing torch, bitsandbytes and torchvision finds, in the SDK's DoctorProbe shape."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from probe_process import assert_wire_shape, run_probe

from idefics2_worker.probe.doctor import (
    bitsandbytes_report,
    cuda_report,
    doctor_report,
    is_installed,
    short_error,
    torchvision_report,
)


@pytest.mark.timeout(120)
def test_the_probe_prints_the_doctor_report_as_the_last_line_of_stdout() -> None:
    report, before = run_probe("doctor")
    assert_wire_shape(report)
    assert before.strip() == ""
    assert report["torch"] == {"ok": True, "error": None, "cuda": report["torch"]["cuda"]}
    assert report["bitsandbytes"]["present"] == is_installed("bitsandbytes")
    if report["bitsandbytes"]["ok"]:
        assert report["bitsandbytes"]["backend"] is not None
        assert "libbitsandbytes" in report["bitsandbytes"]["library"]
    for device in report["cuda"]["devices"]:
        assert set(device) == {"index", "name", "capability", "totalMemory", "freeMemory"}


@pytest.mark.timeout(120)
def test_a_library_that_prints_and_fails_on_import_leaves_stdout_to_the_report(tmp_path: Path) -> None:
    stub = tmp_path / "torchvision"
    stub.mkdir()
    code = "print('torchvision says hello')\nraise RuntimeError('operator torchvision::nms does not exist\\nmore')\n"
    (stub / "__init__.py").write_text(code)
    report, before = run_probe("doctor", extra_path=str(tmp_path))
    assert before.strip() == ""
    assert report["torchvision"] == {
        "present": True,
        "ok": False,
        "version": None,
        "error": "RuntimeError: operator torchvision::nms does not exist",
    }


def test_the_report_called_in_process_has_the_wire_shape() -> None:
    assert_wire_shape(doctor_report())


def test_an_error_is_its_type_and_first_line_cut_at_500_characters() -> None:
    assert short_error(ValueError("first\nsecond")) == "ValueError: first"
    assert short_error(OSError("x" * 600)) == "OSError: " + "x" * 491
    assert short_error(KeyError()) == "KeyError:"


def fake_torch(available: bool = True, count: int = 1, free: Any = 1000, broken: bool = False) -> Any:
    def mem_get_info(index: int) -> tuple[int, int]:
        if free is None:
            raise RuntimeError("not supported")
        return free, 2000

    def device_count() -> int:
        if broken:
            raise RuntimeError("CUDA driver initialization failed\nsee the log")
        return count

    props = SimpleNamespace(name="Fake GPU", major=9, minor=0, total_memory=2000)
    cuda = SimpleNamespace(
        is_available=lambda: available,
        device_count=device_count,
        get_device_properties=lambda index: props,
        mem_get_info=mem_get_info,
    )
    return SimpleNamespace(cuda=cuda)


def test_each_cuda_device_is_reported_with_free_memory_or_none_when_it_cannot_be_read() -> None:
    device = {"index": 0, "name": "Fake GPU", "capability": "9.0", "totalMemory": 2000, "freeMemory": 1000}
    assert cuda_report(fake_torch()) == {"available": True, "error": None, "devices": [device]}
    unknown_free = cuda_report(fake_torch(free=None))["devices"]
    assert unknown_free == [device | {"freeMemory": None}]
    assert cuda_report(fake_torch(available=False)) == {"available": False, "error": None, "devices": []}


def test_a_failing_cuda_query_is_an_error_keeping_what_was_found() -> None:
    report = cuda_report(fake_torch(broken=True))
    assert report == {"available": True, "error": "RuntimeError: CUDA driver initialization failed", "devices": []}


def test_packages_that_are_not_installed_are_absent_not_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("idefics2_worker.probe.doctor.is_installed", lambda name: False)
    assert bitsandbytes_report() == {
        "present": False,
        "ok": False,
        "error": None,
        "backend": None,
        "library": None,
        "compiledWithCuda": None,
        "libraryError": None,
    }
    assert torchvision_report() == {"present": False, "ok": False, "version": None, "error": None}
