"""The deployment on a local Ray cluster: two replicas of `idefics2 serve` with the embedded model, on CPU."""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from ray_cluster import APP_NAME, REPLICAS, RayDeployment, start_deployment

HERE = Path(__file__).resolve().parent
DEMO = HERE.parents[2] / "assets" / "demo"
MAX_TOKENS = 24
# Long enough that a replica is killed while answers are being written: 12 such answers take about 10 s here (CPU).
LONG_TOKENS = 300


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


BLOG: list[Any] = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": _data_url(DEMO / "first.png", "image/png")}},
            {"type": "text", "text": "What do we see in this image?"},
        ],
    },
    {"role": "assistant", "content": "In this image, we can see a red circle."},
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": _data_url(DEMO / "second.jpg", "image/jpeg")}},
            {"type": "text", "text": "And how about this image? Which colour is that?"},
        ],
    },
]


@pytest.fixture(scope="module")
def ray_deployment() -> Iterator[RayDeployment]:
    """One cluster for the whole suite: this is its only module that needs one."""
    yield from start_deployment()


def _client(deployment: RayDeployment) -> OpenAI:
    return OpenAI(base_url=deployment.base_url, api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def sdk_answers(ray_deployment: RayDeployment) -> dict[str, Any]:
    """The blog's conversation from the local SDK and from connect() against the deployment (one Node process)."""
    done = subprocess.run(
        ["node", str(HERE / "sdk_answers.mjs"), ray_deployment.base_url, str(MAX_TOKENS)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _answer(client: OpenAI) -> tuple[str, list[int], str]:
    raw = client.chat.completions.with_raw_response.create(model="tiny-idefics2", messages=BLOG, max_tokens=MAX_TOKENS)
    completion = raw.parse()
    replica = raw.headers["x-idefics2-replica"]
    return replica, (completion.choices[0].model_extra or {})["token_ids"], completion.choices[0].message.content or ""


def _replica_servers() -> dict[int, int]:
    """{pid of each replica's `idefics2 serve`: pid of its replica actor} on this machine, for this suite's app."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_title = Path(f"/proc/{parent}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"serve" in argv and parent_title.startswith(f"ray::ServeReplica:{APP_NAME}:".encode()):
            found[int(entry.name)] = parent
    return found


def _wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout_s:.0f} s")


@pytest.mark.timeout(200)
def test_connect_reaches_the_deployment_and_answers_as_the_local_sdk(sdk_answers: dict[str, Any]) -> None:
    local = sdk_answers["local"]
    assert local["tokenIds"]
    assert local["text"]
    assert sdk_answers["remote"] == local
    streamed = sdk_answers["streamed"]
    assert streamed["streamedText"] == local["text"]
    assert {key: streamed[key] for key in local} == local


@pytest.mark.timeout(120)
def test_concurrent_requests_spread_over_both_replicas_with_the_local_answer(
    ray_deployment: RayDeployment, sdk_answers: dict[str, Any]
) -> None:
    client = _client(ray_deployment)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: _answer(client), range(12)))
    assert len({replica for replica, _, _ in answers}) == REPLICAS
    local = sdk_answers["local"]
    assert {(tuple(ids), text) for _, ids, text in answers} == {(tuple(local["tokenIds"]), local["text"])}


def _long_request(client: OpenAI, stream: bool, started: queue.Queue[str]) -> str:
    """How one long request ended: `answered`, `replica_failed`, or anything else (which the test refuses)."""
    extra = {"min_tokens": LONG_TOKENS}
    try:
        if not stream:
            completion = client.chat.completions.create(
                model="tiny-idefics2", messages=BLOG, max_tokens=LONG_TOKENS, extra_body=extra
            )
            usage = completion.usage
            complete = completion.choices[0].finish_reason == "length" and usage and usage.completion_tokens
            return "answered" if complete == LONG_TOKENS else f"incomplete: {completion!r}"[:300]
        raw = client.chat.completions.with_raw_response.create(
            model="tiny-idefics2",
            messages=BLOG,
            max_tokens=LONG_TOKENS,
            extra_body=extra,
            stream=True,
            stream_options={"include_usage": True},
        )
        finish, tokens, told = None, None, False
        for chunk in raw.parse():
            if not told and chunk.choices and chunk.choices[0].delta.content:
                started.put(raw.headers["x-idefics2-replica"])
                told = True
            finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
            tokens = chunk.usage.completion_tokens if chunk.usage else tokens
        return "answered" if (finish, tokens) == ("length", LONG_TOKENS) else f"ended silently: {finish} {tokens}"
    except openai.APIError as error:
        status = getattr(error, "status_code", None)
        if error.code == "replica_failed" and status in {None, 503}:
            return "replica_failed"
        return f"other error: {status} {error.code} {error.message}"[:300]


def _replicas_serving(client: OpenAI) -> set[str]:
    with ThreadPoolExecutor(8) as pool:
        return {replica for replica, _, _ in pool.map(lambda _: _answer(client), range(8))}


@pytest.mark.timeout(300)
def test_a_replica_killed_under_load_and_while_loading_loses_no_request_silently(
    ray_deployment: RayDeployment, sdk_answers: dict[str, Any]
) -> None:
    client = _client(ray_deployment)
    servers = _replica_servers()
    assert len(servers) == REPLICAS
    pid_of = {}
    while len(pid_of) < REPLICAS:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=BLOG, max_tokens=1)
        pid_of[raw.headers["x-idefics2-replica"]] = int(raw.headers["x-idefics2-server-pid"])
    assert set(pid_of.values()) == set(servers)

    started: queue.Queue[str] = queue.Queue()
    with ThreadPoolExecutor(12) as pool:
        outcomes = [pool.submit(_long_request, client, index % 3 != 0, started) for index in range(12)]
        victim = started.get(timeout=60)  # a replica with a stream under way
        os.kill(pid_of[victim], signal.SIGKILL)
        ended = [outcome.result(timeout=240) for outcome in outcomes]
    assert [end for end in ended if end not in {"answered", "replica_failed"}] == []
    assert "replica_failed" in ended  # the stream the kill cut off
    assert "answered" in ended  # the other replica's

    # Ray replaces the replica; its server is killed again while it loads. Meanwhile the survivor answers everything.
    known = set(servers)
    replacement = _wait_for(lambda: set(_replica_servers()) - known, 120, "a replacement replica's server")
    os.kill(replacement.pop(), signal.SIGKILL)
    survivors = _replicas_serving(client)
    assert victim not in survivors
    assert len(survivors) == 1

    recovered = _wait_for(lambda: (serving := _replicas_serving(client)) and len(serving) == REPLICAS, 180, "recovery")
    assert recovered
    _, ids, text = _answer(client)
    assert (ids, text) == (sdk_answers["local"]["tokenIds"], sdk_answers["local"]["text"])
    assert len(_replica_servers()) == REPLICAS


@pytest.mark.timeout(60)
def test_models_health_and_refusals_pass_through_unchanged(ray_deployment: RayDeployment) -> None:
    client = _client(ray_deployment)
    models = client.models.list()
    assert [model.id for model in models.data] == ["tiny-idefics2"]
    health = client.get("/../health", cast_to=object)
    assert health == {"status": "ok"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="m", messages=BLOG, n=2)
    assert refused.value.code == "unsupported_parameter"


def _listening_port(pid: int) -> int:
    """The TCP port a process listens on, from /proc (a replica's server is on a loopback port Ray does not show)."""
    sockets = {
        link[len("socket:[") : -1]
        for fd in os.listdir(f"/proc/{pid}/fd")
        if (link := os.readlink(f"/proc/{pid}/fd/{fd}")).startswith("socket:[")
    }
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
            return int(fields[1].split(":")[1], 16)
    raise AssertionError(f"process {pid} listens on no TCP port")


def _running(server: str) -> float:
    """`idefics2_requests_running` of one replica's server, asked directly (the router would pick an idle replica)."""
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    running = next(line for line in metrics.splitlines() if line.startswith("idefics2_requests_running"))
    return float(running.split()[-1])


@pytest.mark.timeout(60)
def test_a_client_that_leaves_stops_the_generation_on_its_replica(ray_deployment: RayDeployment) -> None:
    client = _client(ray_deployment)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=BLOG, max_tokens=8000, extra_body={"min_tokens": 8000}, stream=True
    )
    server = f"http://127.0.0.1:{_listening_port(int(raw.headers['x-idefics2-server-pid']))}"
    stream = raw.parse()
    next(iter(stream))
    assert _running(server) == 1
    stream.close()
    # 8,000 tokens take over 10 s here: a generation that stops within 3 s was stopped by the client leaving.
    _wait_for(lambda: _running(server) == 0, 3, "the replica's server stopping the generation")
