"""Shared fixtures: a wall-clock limit on every test, and where the tiny model and demo pictures live."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PYTHON_DIR.parent
TINY_MODEL = REPO_ROOT / "assets" / "tiny-idefics2"
DEMO_DIR = REPO_ROOT / "assets" / "demo"
DEFAULT_TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def _time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that runs past its `timeout` mark (default 60 s) instead of hanging the run."""
    marker = request.node.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker else DEFAULT_TIMEOUT_S
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        pytest.fail(f"Test ran past its {seconds:.0f} s limit", pytrace=True)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def worker() -> Iterator[Any]:
    """One worker for the whole run (startup imports torch once); its first frame is kept as `ready`."""
    from worker_process import WorkerProcess

    process = WorkerProcess()
    process.ready = process.next_frame(timeout=30)
    yield process
    process.stop()


def load_params(mode: str = "none", **overrides: object) -> dict[str, object]:
    """`load` params as the SDK sends them, for the tiny model."""
    quantization = {"mode": mode, "quantType": None, "doubleQuant": None, "computeDtype": None}
    quantization |= {"skipModules": None, "int8Threshold": None}
    params: dict[str, object] = {
        "model": str(TINY_MODEL),
        "revision": None,
        "quantization": quantization,
        "deviceMap": "auto",
        "dtype": "auto",
        "attnImplementation": None,
        "doImageSplitting": None,
        "longestEdge": None,
        "trustRemoteCode": False,
        "localFilesOnly": False,
    }
    return params | overrides
