"""A load's counts: the hub download's bytes and transformers' weight loading, from silent tqdm bars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON_DIR, TINY_MODEL
from fake_hub import FakeHub

from idefics2_worker.engine.load_progress import progress_tqdm

REPO = "test-org/tiny-idefics2"

# load_model in a fresh interpreter (huggingface_hub reads HF_ENDPOINT when imported), printing each event as JSON.
LOAD = """
import json, sys, threading
from idefics2_worker.engine.loading import load_model
from idefics2_worker.protocol.params import parse_load

def on_progress(stage, message, **count):
    print(json.dumps({"stage": stage, "message": message, **count}), flush=True)

load_model(parse_load({"model": sys.argv[1], "deviceMap": "cpu"}), threading.Event(), on_progress)
"""


def _load_from(hub: FakeHub, cache: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(cache), "PYTHONPATH": str(PYTHON_DIR)}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", LOAD, REPO], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Nothing but the events on stdout: the bars drew nothing there (nor on stderr).
    assert "Loading weights" not in done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.timeout(180)
def test_a_hub_download_reports_its_bytes_then_the_weights_are_counted(tmp_path: Path) -> None:
    hub = FakeHub(TINY_MODEL, REPO)
    try:
        events = _load_from(hub, tmp_path / "hf")
    finally:
        hub.close()
    assert ("GET", f"/{REPO}/resolve/main/model.safetensors") in hub.requests
    size = (TINY_MODEL / "model.safetensors").stat().st_size
    stages = [event["stage"] for event in events if "done" not in event]
    assert stages == ["processor", "model"]

    download = [event for event in events if event["stage"] == "download"]
    assert {event["message"] for event in download} == {f"Downloading {REPO}"}
    assert {(event["unit"], event["total"]) for event in download} == {("bytes", size)}
    done = [event["done"] for event in download]
    assert done[0] == 0
    assert done[-1] == size
    # huggingface_hub counts in 10 MB reads: the tiny model's 8 MB arrive as one, so 0 then all of it.
    assert done == sorted(set(done))

    weights = [event for event in events if "done" in event and event["stage"] == "model"]
    assert weights[0] == {
        "stage": "model",
        "message": f"Loading the weights of {REPO}",
        "done": 0,
        "total": 92,
        "unit": "items",
    }
    assert weights[-1]["done"] == 92
    # In order: the model stage starts, its weights download, then they are placed.
    assert events.index(download[0]) > [event["stage"] for event in events].index("model")
    assert events.index(weights[0]) > events.index(download[-1])


def test_a_bar_reports_its_first_and_last_count_and_at_most_one_between_per_interval() -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []
    bar_class = progress_tqdm(lambda stage, message, **count: seen.append((stage, message, count)), "s", "m", unit="it")
    for _ in bar_class(range(1000)):
        pass
    assert seen[0] == ("s", "m", {"done": 0.0, "total": 1000.0, "unit": "items"})
    assert seen[-1] == ("s", "m", {"done": 1000.0, "total": 1000.0, "unit": "items"})
    assert len(seen) <= 3  # far faster than the 0.2 s interval

    # A byte counter's bars: only those counting bytes report, and never the hub's guessed network total.
    seen.clear()
    bytes_class = progress_tqdm(
        lambda stage, message, **count: seen.append((stage, message, count)), "d", "m", unit="B"
    )
    bytes_class(total=3, desc="Fetching 3 files").update(3)
    bytes_class(total=10, unit="B", desc="Downloading bytes").update(10)
    bar = bytes_class(total=10, unit="B", desc="model.safetensors")
    bar.update(4)
    bar.update(6)
    bar.close()
    assert [count for _, _, count in seen] == [
        {"done": 0.0, "total": 10.0, "unit": "bytes"},
        {"done": 10.0, "total": 10.0, "unit": "bytes"},
    ]
