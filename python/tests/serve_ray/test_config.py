"""The deployment's settings, its command line and its child process, without a cluster."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from idefics2_serve_ray.__main__ import main
from idefics2_serve_ray.config import Idefics2RayConfig
from idefics2_serve_ray.idefics2_cli import PACKAGED_CLI
from idefics2_serve_ray.idefics2_process import Idefics2Process, Idefics2ServeError


def test_a_replica_runs_idefics2_serve_with_the_model_and_the_flags_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDEFICS2_CLI", raising=False)
    config = Idefics2RayConfig(model="HuggingFaceM4/idefics2-8b", serve_args=("--quantization", "4bit"))
    command = config.serve_command()
    assert command[-5:] == ["serve", "--model", "HuggingFaceM4/idefics2-8b", "--quantization", "4bit"]
    assert command[1] == str(PACKAGED_CLI)  # this checkout's own CLI, run by node
    assert Idefics2RayConfig(command=("idefics2",)).serve_command() == ["idefics2", "serve"]


@pytest.mark.parametrize(
    "settings",
    [{"autoscale_min": 3, "autoscale_max": 1}, {"autoscale_min": 1}, {"replicas": 0}, {"replica": 2}],
)
def test_settings_that_cannot_work_are_refused_before_anything_starts(settings: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        Idefics2RayConfig.model_validate(settings)


def test_the_command_line_refuses_bad_settings_and_an_open_address_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IDEFICS2_API_KEY", raising=False)
    assert main(["--autoscale", "4,2"]) == 2
    assert "above autoscale_max" in capsys.readouterr().err
    assert main(["--host", "0.0.0.0"]) == 2
    assert "needs IDEFICS2_API_KEY" in capsys.readouterr().err


def test_a_server_that_exits_before_it_listens_is_a_typed_error() -> None:
    with pytest.raises(Idefics2ServeError, match="exited with code 3 before it listened"):
        Idefics2Process([sys.executable, "-c", "import sys; sys.exit(3)"], startup_timeout_s=30)
