"""`deterministic`: a request's tokens are the same alone and beside other requests, and the option is wired.

The fast decoder runs on CPU here with its Triton kernels forced under Triton's interpreter (a subprocess, as in
tests/kernels/test_step_kernels.py); scripts/gpu/check_deterministic.py checks the same on a GPU with CUDA graphs.
"""

from __future__ import annotations

import json
import threading

import pytest
from conftest import load_params
from kernels.test_step_kernels import interpreted

from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.params import parse_load

SAME_REQUEST_IN_BATCHES = """
import json, sys, threading
sys.path.insert(0, ".")
from conftest import load_params
from demo_inputs import as_payload, demo_images, demo_messages
from idefics2_worker.decode.batch_decoder import BatchDecoder
from idefics2_worker.decode.prefill import PrefillPlan
from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.params import parse_generate, parse_load

engine = Engine()
engine.load(parse_load(load_params("none", decoder="reference")), threading.Event(), lambda *_: None)
decoder = BatchDecoder(engine.loaded, 4, PrefillPlan(), use_graphs=False, kernels=True, deterministic=True)

def request(messages, images, tokens):
    specs, payload = as_payload(images)
    raw = {"messages": messages, "images": specs, "options": {"maxNewTokens": tokens, "minNewTokens": tokens}}
    return parse_generate(raw, len(payload)), payload

def text(question):
    return [{"role": "user", "content": [{"type": "text", "text": question}]}]

def run(others):
    results = {}
    def admit(name, params, payload):
        done = lambda result, error: results.__setitem__(name, result.token_ids if result else repr(error))
        assert decoder.admit(params, payload, lambda *_: None, threading.Event(), done)
    # Others first, so the target joins a running batch at another row, and a longer other grows the cache.
    for index, (question, tokens) in enumerate(others):
        admit(index, *request(text(question), [], tokens))
    decoder.step()
    admit("target", *request(demo_messages(), demo_images(), 5))
    while decoder.busy:
        decoder.step()
    return results["target"]

others = [("Tell me about squares.", 9), ("What is a circle?", 2), ("Hello there", 7)]
runs = {"alone": run([]), "again": run([]), "beside 3": run(others)}
decoder.overlap = True  # each next step queued before the last is read, discarded as others end and join
runs["beside 3, overlapped"] = run(others)
print(json.dumps(runs))
"""


@pytest.mark.timeout(420)
def test_the_same_request_gets_the_same_ids_alone_and_among_others() -> None:
    # Four runs of the request under Triton's interpreter: ~210 s on this project's 2-core CI machine.
    done = interpreted("-c", SAME_REQUEST_IN_BATCHES, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(runs["alone"]) == 5
    for name, ids in runs.items():
        assert ids == runs["alone"], name


def test_deterministic_without_the_kernels_is_refused_for_fast_and_uses_generate_for_auto() -> None:
    # On CPU without CUDA the invariant kernels do not run: `fast` cannot promise it, `auto` keeps generate().
    auto = Engine()
    auto.load(parse_load(load_params(deterministic=True)), threading.Event(), lambda *_: None)
    assert auto.batch is None
    with pytest.raises(WorkerError, match="deterministic") as refused:
        Engine().load(parse_load(load_params(decoder="fast", deterministic=True)), threading.Event(), lambda *_: None)
    assert refused.value.code == "INVALID_OPTIONS"


def test_deterministic_is_a_boolean_load_option_off_by_default() -> None:
    assert parse_load(load_params()).deterministic is False
    assert parse_load(load_params(deterministic=True)).deterministic is True
    with pytest.raises(WorkerError, match="deterministic"):
        parse_load(load_params(deterministic="yes"))
