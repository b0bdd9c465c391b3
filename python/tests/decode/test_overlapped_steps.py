"""With `overlap`, each step's successor is queued before the step's tokens are read, and discarded when a
sequence leaves or joins: the tokens are still the step-by-step path's (and generate()'s).

Overlap is on by default only on CUDA, where it hides the host's per-token work; here it is switched on for the
CPU's eager step, which runs the same bookkeeping (device-fed tokens, discarded steps, undone choices).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from test_fast_decoder import Collector, admit, drain, engine, offer, reference_result

from idefics2_worker.decode.batch_decoder import BatchDecoder
from idefics2_worker.engine.engine import Engine


@pytest.fixture
def fast() -> Iterator[Engine]:
    fast = engine("none", "fast")
    assert fast.batch is not None
    assert not fast.batch.overlap  # the CPU's default
    fast.batch.overlap = True
    try:
        yield fast
    finally:
        drain(fast)
        fast.batch.overlap = False


def batch(fast: Engine) -> BatchDecoder:
    assert fast.batch is not None
    return fast.batch


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["demo", "text only", "short text"])
def test_greedy_tokens_equal_generate_with_each_next_step_queued(fast: Engine, name: str) -> None:
    collector = admit(fast, name, maxNewTokens=24)
    prompt = batch(fast).running[0].prepared.prompt_tokens
    batch(fast).step()
    # The step at the prompt's length was read, and the one after it queued; the buffers hold what that queued step
    # chose, at the position after it, for the step after that.
    assert len(batch(fast).running[0].ids) == 2
    assert int(batch(fast).graphs.positions[0]) == prompt + 2
    queued_choice = int(batch(fast).graphs.tokens[0])
    batch(fast).step()
    drain(fast)
    expected = reference_result("none", name)
    assert collector.result is not None
    assert collector.result["tokenIds"] == expected["tokenIds"]
    assert collector.result["tokenIds"][2] == queued_choice
    assert collector.result["text"] == expected["text"] == "".join(collector.deltas)


@pytest.mark.timeout(120)
def test_requests_joining_and_leaving_get_the_ids_of_generate(fast: Engine) -> None:
    expected = {
        "demo": reference_result("none", "demo"),
        "one image": reference_result("none", "one image", maxNewTokens=2),
        "text only": reference_result("none", "text only"),
    }
    first = admit(fast, "demo")
    batch(fast).step()
    batch(fast).step()
    # Joining discards the step queued for the first request alone; leaving (after 2 tokens) the one queued for 3.
    second = admit(fast, "one image", maxNewTokens=2)
    third = admit(fast, "text only")
    batch(fast).step()
    assert second.result is not None
    assert len(batch(fast).running) == 2
    drain(fast)
    for name, collector in (("demo", first), ("one image", second), ("text only", third)):
        assert collector.error is None, name
        assert collector.result is not None
        assert collector.result["tokenIds"] == expected[name]["tokenIds"], name


@pytest.mark.timeout(120)
def test_processors_read_the_device_fed_history(fast: Engine) -> None:
    # Repetition penalty reads every earlier token: the queued step's history holds a token the host has not read.
    collector = admit(fast, "demo", repetitionPenalty=1.3, maxNewTokens=20)
    drain(fast)
    assert collector.result is not None
    expected = reference_result("none", "demo", repetitionPenalty=1.3, maxNewTokens=20)
    assert collector.result["tokenIds"] == expected["tokenIds"]


@pytest.mark.timeout(120)
def test_a_discarded_step_gives_back_its_random_draws(fast: Engine) -> None:
    sampled = {"doSample": True, "temperature": 1.5, "topK": 50, "seed": 7, "maxNewTokens": 16, "minNewTokens": 16}
    fast.batch.overlap = False  # type: ignore[union-attr]
    alone = admit(fast, "text only", **sampled)
    drain(fast)
    fast.batch.overlap = True  # type: ignore[union-attr]
    # Requests that end or join while it runs discard steps that had drawn its next token.
    together = [Collector(), Collector()]
    outcomes = batch(fast).admit_many([offer("text only", together[0], **sampled), offer("short text", together[1])])
    assert outcomes == [True, True]
    for _ in range(3):
        batch(fast).step()
    joining = admit(fast, "one image", maxNewTokens=3)
    drain(fast)
    assert alone.result is not None
    assert together[0].result is not None
    assert joining.result is not None
    assert together[0].result["tokenIds"] == alone.result["tokenIds"]
    assert len(alone.result["tokenIds"]) == 16


@pytest.mark.timeout(120)
def test_cancel_and_cancel_all_with_a_step_queued(fast: Engine) -> None:
    cancel = threading.Event()
    doomed = admit(fast, "demo", cancel=cancel, maxNewTokens=40, minNewTokens=40)
    survivor = admit(fast, "text only")
    batch(fast).step()
    cancel.set()
    batch(fast).step()
    assert doomed.error is not None
    drain(fast)
    assert survivor.result is not None
    assert survivor.result["tokenIds"] == reference_result("none", "text only")["tokenIds"]
    ended = admit(fast, "demo", maxNewTokens=40, minNewTokens=40)
    batch(fast).step()
    batch(fast).cancel_all(RuntimeError("stopping"))
    assert isinstance(ended.error, RuntimeError)
    assert not batch(fast).busy
    again = admit(fast, "text only")
    drain(fast)
    assert again.result is not None
    assert again.result["tokenIds"] == survivor.result["tokenIds"]
