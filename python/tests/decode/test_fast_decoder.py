"""The fast decoder (slot KV cache, continuous batching; CUDA graphs on GPU) computes what generate() computes.

On CPU the step runs eagerly, so these tests check the function itself: its logits on the reference's tokens,
its greedy tokens, requests joining and leaving a running batch (alone or several prefilled together), sampling,
cancel and errors.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
import torch
from conftest import load_params
from demo_inputs import as_payload, demo_images, demo_messages

from idefics2_worker.decode.batch_decoder import AdmissionFields
from idefics2_worker.decode.teacher_forcing import fast_path_logits
from idefics2_worker.engine.engine import Engine, choose_batch_decoder
from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.params import parse_generate, parse_load
from idefics2_worker.protocol.results import GenerationResult

ENGINES: dict[tuple[str, str], Engine] = {}


def engine(mode: str, decoder: str) -> Engine:
    key = (mode, decoder)
    if key not in ENGINES:
        loaded = Engine()
        loaded.load(parse_load(load_params(mode, decoder=decoder)), threading.Event(), lambda *_: None)
        ENGINES[key] = loaded
    return ENGINES[key]


def request(messages: list[dict[str, Any]], images: list[Any], **options: Any) -> tuple[Any, bytes]:
    specs, payload = as_payload(images)
    raw = {"messages": messages, "images": specs, "options": {"maxNewTokens": 24, **options}, "stream": True}
    return parse_generate(raw, len(payload)), payload


def text_only(question: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": question}]}]


def one_image(question: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


REQUESTS = {
    "demo": lambda **o: request(demo_messages(), demo_images(), **o),
    "one image": lambda **o: request(one_image("What colour is this?"), demo_images()[1:], **o),
    "text only": lambda **o: request(text_only("Say something about squares."), [], **o),
    # Its third token is where a position off by one once showed (its margin is 1.6 logits).
    "short text": lambda **o: request(text_only("Tell me about squares."), [], **o),
}


def reference_result(mode: str, name: str, **options: Any) -> dict[str, Any]:
    params, payload = REQUESTS[name](**options)
    return engine(mode, "reference").generate(params, payload, lambda *_: None, threading.Event()).to_wire()


class Collector:
    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def on_token(self, text: str, ids: list[int]) -> None:
        self.deltas.append(text)

    def on_done(self, result: GenerationResult | None, error: BaseException | None) -> None:
        self.result, self.error = (result.to_wire() if result is not None else None), error


def admit(fast: Engine, name: str, cancel: threading.Event | None = None, **options: Any) -> Collector:
    params, payload = REQUESTS[name](**options)
    collector = Collector()
    assert fast.batch is not None
    fast.batch.admit(params, payload, collector.on_token, cancel or threading.Event(), collector.on_done)
    return collector


def drain(fast: Engine) -> None:
    assert fast.batch is not None
    for _ in range(1000):
        if not fast.batch.busy:
            return
        fast.batch.step()
    pytest.fail("the batch did not finish within 1000 steps")


def test_decoder_auto_is_the_reference_path_on_cpu_and_fast_is_reported() -> None:
    assert engine("none", "auto").batch is None
    assert engine("none", "auto").describe()["decoder"] == "reference"
    assert engine("none", "fast").describe()["decoder"] == "fast"
    assert engine("none", "fast").describe()["maxBatchSize"] == 8


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("mode", "tolerance"), [("none", 1e-4), ("4bit", 1e-4), ("8bit", 0.1)])
def test_teacher_forced_logits_match_generate_step_by_step(mode: str, tolerance: float) -> None:
    # 8-bit: the vision tower runs one sub-image at a time, and LLM.int8() picks outlier columns over the
    # whole batch it is given, so the image features differ within int8 precision (CPU: ~0.03 of logits ~16).
    loaded = engine(mode, "reference").loaded
    assert loaded is not None
    model, processor = loaded.model, loaded.processor
    prompt = processor.apply_chat_template(demo_messages(), add_generation_prompt=True)
    inputs = processor(text=prompt, images=demo_images(), return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=30, min_new_tokens=30, do_sample=False)
    tokens = generated[0, inputs["input_ids"].shape[1] :].tolist()
    with torch.inference_mode():
        out = model(**inputs, use_cache=True)
        cache, mask, expected = out.past_key_values, inputs["attention_mask"], [out.logits[:, -1].float()]
        for token in tokens[:-1]:
            step = torch.tensor([[token]])
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            out = model(input_ids=step, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            expected.append(out.logits[:, -1].float())
    reference = torch.cat(expected)
    fast = fast_path_logits(model, inputs, tokens, use_graphs=False)
    assert fast.shape == reference.shape == (30, model.config.text_config.vocab_size)
    assert (fast - reference).abs().max().item() < tolerance
    assert torch.equal(fast.argmax(-1), reference.argmax(-1))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["none", "8bit", "4bit"])
@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_greedy_tokens_equal_generate(mode: str, name: str) -> None:
    expected = reference_result(mode, name)
    fast = engine(mode, "fast")
    collector = admit(fast, name)
    drain(fast)
    assert collector.error is None
    assert collector.result is not None
    assert collector.result["tokenIds"] == expected["tokenIds"]
    assert collector.result["text"] == expected["text"] == "".join(collector.deltas)
    assert collector.result["finishReason"] == expected["finishReason"]
    assert collector.result["usage"] == expected["usage"]


@pytest.mark.timeout(120)
def test_requests_joining_and_leaving_a_running_batch_each_get_their_own_answer() -> None:
    # Natural stops only: past its answer the tiny model's logits have near-ties, where batch-size-dependent
    # rounding in the CPU's matmul may pick either token (the teacher-forced test covers the function there).
    fast = engine("none", "fast")
    expected = {
        "demo": reference_result("none", "demo"),
        "one image": reference_result("none", "one image", maxNewTokens=2),
        "text only": reference_result("none", "text only"),
    }
    assert fast.batch is not None
    first = admit(fast, "demo")
    fast.batch.step()
    fast.batch.step()
    second = admit(fast, "one image", maxNewTokens=2)
    third = admit(fast, "text only")
    assert len(fast.batch.running) == 3
    fast.batch.step()
    # The short request finished in the middle of the batch; its slot went to the last running request.
    assert second.result is not None
    assert len(fast.batch.running) == 2
    drain(fast)
    for name, collector in (("demo", first), ("one image", second), ("text only", third)):
        assert collector.error is None, name
        assert collector.result is not None
        assert collector.result["tokenIds"] == expected[name]["tokenIds"], name
        assert "".join(collector.deltas) == collector.result["text"], name
    assert len(third.result["tokenIds"]) > len(first.result["tokenIds"]) - 2


@pytest.mark.timeout(120)
def test_more_requests_than_slots_wait_for_room() -> None:
    fast = Engine()
    fast.load(parse_load(load_params(decoder="fast", maxBatchSize=2)), threading.Event(), lambda *_: None)
    assert fast.batch is not None
    admit(fast, "demo")
    admit(fast, "text only")
    assert fast.batch.room() == 0
    drain(fast)
    assert fast.batch.room() > 0


@pytest.mark.timeout(120)
def test_sampling_with_a_seed_is_reproducible_and_uses_generates_processors() -> None:
    fast = engine("none", "fast")
    options = {"doSample": True, "temperature": 1.5, "topK": 50, "seed": 7, "maxNewTokens": 20, "minNewTokens": 20}
    runs = []
    for _ in range(2):
        collector = admit(fast, "text only", **options)
        drain(fast)
        assert collector.result is not None
        runs.append(collector.result["tokenIds"])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 20
    # minNewTokens goes through transformers' MinNewTokensLengthLogitsProcessor: no EOS before 20 tokens.
    assert not set(runs[0][:-1]) & set(fast.loaded.eos_ids)
    other_seed = admit(fast, "text only", **(options | {"seed": 8}))
    drain(fast)
    assert other_seed.result is not None
    assert other_seed.result["tokenIds"] != runs[0]


@pytest.mark.timeout(120)
def test_repetition_penalty_matches_generate() -> None:
    fast = engine("none", "fast")
    collector = admit(fast, "demo", repetitionPenalty=1.3, maxNewTokens=20)
    drain(fast)
    assert collector.result is not None
    assert (
        collector.result["tokenIds"]
        == reference_result("none", "demo", repetitionPenalty=1.3, maxNewTokens=20)["tokenIds"]
    )


@pytest.mark.timeout(120)
def test_cancel_ends_one_request_and_leaves_the_others_running() -> None:
    fast = engine("none", "fast")
    cancel = threading.Event()
    doomed = admit(fast, "demo", cancel=cancel, maxNewTokens=40, minNewTokens=40)
    survivor = admit(fast, "text only")
    assert fast.batch is not None
    fast.batch.step()
    cancel.set()
    fast.batch.step()
    assert isinstance(doomed.error, WorkerError)
    assert doomed.error.code == "ABORTED"
    drain(fast)
    assert survivor.result is not None
    assert survivor.result["tokenIds"] == reference_result("none", "text only")["tokenIds"]


def test_beam_search_and_stop_strings_are_left_to_generate() -> None:
    fast = engine("none", "fast")
    assert fast.batch is not None
    assert not fast.batch.accepts(REQUESTS["demo"](numBeams=2)[0])
    assert not fast.batch.accepts(REQUESTS["demo"](stopStrings=["square"])[0])
    assert fast.batch.accepts(REQUESTS["demo"](doSample=True)[0])


def test_a_bad_request_fails_alone_at_admission() -> None:
    fast = engine("none", "fast")
    params, payload = request(one_image("?"), [demo_images()[1].resize((5, 1))])
    collector = Collector()
    assert fast.batch is not None
    with pytest.raises(WorkerError) as raised:
        fast.batch.admit(params, payload, collector.on_token, threading.Event(), collector.on_done)
    assert raised.value.code == "IMAGE_UNREADABLE"
    assert not fast.batch.busy
    with contextlib.suppress(Exception):
        drain(fast)


def test_fast_decoder_on_a_model_spread_over_devices_is_refused_clearly() -> None:
    # One CPU cannot spread a model; the check itself is what is tested, through a fake parameter list.
    loaded = engine("none", "reference").loaded
    assert loaded is not None
    params = parse_load(load_params(decoder="fast"))

    def spread() -> Any:
        yield torch.nn.Parameter(torch.zeros(1))
        yield torch.nn.Parameter(torch.zeros(1, device="meta"))

    loaded.model.parameters = spread
    try:
        with pytest.raises(WorkerError) as raised:
            choose_batch_decoder(loaded, params)
        assert raised.value.code == "INVALID_OPTIONS"
        assert "one device" in raised.value.message
    finally:
        del loaded.model.parameters
    assert sum(p.numel() for p in loaded.model.parameters()) > 0


def test_each_step_feeds_the_last_token_at_the_next_position() -> None:
    # The convention the teacher-forced parity check (fast_path_logits) uses: the first decode step feeds the
    # token chosen from the prefill's logits at position len(prompt), and each step after at one more.
    fast = engine("none", "fast")
    assert fast.batch is not None
    collector = admit(fast, "demo", maxNewTokens=5, minNewTokens=5)
    prompt = fast.batch.running[0].prepared.prompt_tokens
    for step in range(3):
        fed = fast.batch.running[0].ids[-1]
        fast.batch.step()
        assert int(fast.batch.graphs.positions[0]) == prompt + step
        assert int(fast.batch.graphs.tokens[0]) == fed
    drain(fast)
    assert collector.result is not None


@pytest.mark.timeout(120)
def test_the_cache_grows_as_a_long_answer_needs_it_and_a_huge_limit_allocates_nothing_up_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from idefics2_worker.decode import batch_decoder

    def answer(first_stretch: int) -> tuple[list[int], int]:
        monkeypatch.setattr(batch_decoder, "FIRST_STRETCH", first_stretch)
        fast = Engine()
        fast.load(parse_load(load_params(decoder="fast")), threading.Event(), lambda *_: None)
        assert fast.batch is not None
        collector = admit(fast, "demo", maxNewTokens=400, minNewTokens=400)
        start = fast.batch.graphs.length
        drain(fast)
        assert collector.result is not None
        return collector.result["tokenIds"], start

    grown, grown_start = answer(16)
    whole, whole_start = answer(512)
    assert grown_start == 256 < whole_start
    assert len(grown) == 400
    assert grown == whole  # moving the cache to a larger one changes nothing

    fast = engine("none", "fast")
    assert fast.batch is not None
    collector = admit(fast, "demo", maxNewTokens=1_000_000)
    assert fast.batch.graphs.length < 2048
    drain(fast)
    assert collector.result is not None
    assert collector.result["text"] == "That is a blue square."


def test_a_request_longer_than_the_sliding_window_is_left_to_generate() -> None:
    # idefics2-8b's Mistral attends within 4,096 positions; the step attends to all it caches, so a longer
    # request must run through generate(). The tiny model has no window: give it one for this test.
    fast = engine("none", "fast")
    assert fast.batch is not None
    graphs = fast.batch.graphs
    graphs.sliding_window = 150
    try:
        params, payload = REQUESTS["demo"](maxNewTokens=20)  # 136 prompt tokens + 20 > 150
        collector = Collector()
        taken = fast.batch.admit(params, payload, collector.on_token, threading.Event(), collector.on_done)
        assert taken is False
        assert not fast.batch.busy
        assert collector.result is None
        assert collector.error is None
        params, payload = REQUESTS["demo"](maxNewTokens=10)
        assert fast.batch.admit(params, payload, collector.on_token, threading.Event(), collector.on_done)
        drain(fast)
        assert collector.result is not None
    finally:
        graphs.sliding_window = None


def test_a_request_asked_past_the_window_is_refused_before_its_prefill_and_one_past_it_by_default_after(
    prefills: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from idefics2_worker.decode import batch_decoder

    fast = engine("none", "fast")
    assert fast.batch is not None
    fast.batch.graphs.sliding_window = 150
    try:
        params, payload = REQUESTS["demo"](maxNewTokens=20)  # 136 prompt tokens + 20 asked > 150
        collector = Collector()
        assert fast.batch.admit(params, payload, collector.on_token, threading.Event(), collector.on_done) is False
        assert prefills == []  # refused on the asked length: no prefill ran
        # A length that only the generation config settles (as a model's default max_new_tokens would) is known
        # once the prefill runs; the request is refused then, and nothing joins.
        monkeypatch.setattr(batch_decoder, "new_token_limit", lambda _config, _prompt: 50)
        params, payload = REQUESTS["demo"](maxNewTokens=10)
        assert fast.batch.admit(params, payload, collector.on_token, threading.Event(), collector.on_done) is False
        assert prefills == [1]
        assert not fast.batch.busy
        assert collector.result is None
        assert collector.error is None
    finally:
        fast.batch.graphs.sliding_window = None


def offer(name: str, collector: Collector, cancel: threading.Event | None = None, **options: Any) -> AdmissionFields:
    """One request as `admit_many` takes it."""
    params, payload = REQUESTS[name](**options)
    return (params, payload, collector.on_token, cancel or threading.Event(), collector.on_done)


@pytest.fixture
def prefills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many prompts each prefill the batch decoder runs takes (the real prefills run)."""
    from idefics2_worker.decode import batch_decoder

    sizes: list[int] = []
    alone, together = batch_decoder.prefill, batch_decoder.prefill_many

    def prefill(model: Any, inputs: Any, plan: Any) -> Any:
        sizes.append(1)
        return alone(model, inputs, plan)

    def prefill_many(model: Any, inputs_list: Any, plan: Any, pad_id: int = 0) -> Any:
        sizes.append(len(inputs_list))
        return together(model, inputs_list, plan, pad_id)

    monkeypatch.setattr(batch_decoder, "prefill", prefill)
    monkeypatch.setattr(batch_decoder, "prefill_many", prefill_many)
    return sizes


@pytest.mark.timeout(120)
def test_requests_admitted_together_get_the_ids_they_get_alone_and_from_generate(prefills: list[int]) -> None:
    fast = engine("none", "fast")
    assert fast.batch is not None
    # Three prompt lengths: two pictures, none, one.
    names = ["demo", "short text", "one image"]
    expected = {name: reference_result("none", name) for name in names}
    alone = {}
    for name in names:
        collector = admit(fast, name)
        drain(fast)
        assert collector.result is not None
        alone[name] = collector.result["tokenIds"]
    assert prefills == [1, 1, 1]
    prefills.clear()
    collectors = [Collector() for _ in names]
    outcomes = fast.batch.admit_many([offer(n, c) for n, c in zip(names, collectors, strict=True)])
    assert outcomes == [True, True, True]
    assert prefills == [3]
    assert len(fast.batch.running) == 3
    drain(fast)
    for name, collector in zip(names, collectors, strict=True):
        assert collector.error is None, name
        assert collector.result is not None
        assert collector.result["tokenIds"] == alone[name] == expected[name]["tokenIds"], name
        assert collector.result["text"] == expected[name]["text"] == "".join(collector.deltas), name
        assert collector.result["usage"] == expected[name]["usage"], name


@pytest.mark.timeout(120)
def test_a_request_that_fails_to_prepare_among_others_alone_gets_its_error(prefills: list[int]) -> None:
    fast = engine("none", "fast")
    assert fast.batch is not None
    good = [Collector(), Collector()]
    bad = Collector()
    params, payload = request(one_image("?"), [demo_images()[1].resize((5, 1))])  # 1 pixel tall: unreadable
    outcomes = fast.batch.admit_many(
        [
            offer("demo", good[0]),
            (params, payload, bad.on_token, threading.Event(), bad.on_done),
            offer("text only", good[1]),
        ]
    )
    assert outcomes[0] is True
    assert outcomes[2] is True
    assert isinstance(outcomes[1], WorkerError)
    assert outcomes[1].code == "IMAGE_UNREADABLE"
    assert prefills == [2]
    drain(fast)
    assert bad.result is None
    assert bad.error is None  # the caller answers a request that never started, from its outcome
    for name, collector in zip(("demo", "text only"), good, strict=True):
        assert collector.result is not None
        assert collector.result["tokenIds"] == reference_result("none", name)["tokenIds"], name


@pytest.mark.timeout(120)
def test_cancelled_requests_are_dropped_and_the_others_take_their_own_rows(prefills: list[int]) -> None:
    fast = engine("none", "fast")
    assert fast.batch is not None
    before, during = threading.Event(), threading.Event()
    before.set()
    names = ["demo", "one image", "short text", "text only"]
    collectors = [Collector() for _ in names]
    cancels = [threading.Event(), before, during, threading.Event()]
    # `during` is set once the batched prefill has started: the prefill goes on for the others.
    hook = fast.batch.model.model.text_model.register_forward_pre_hook(lambda *_: during.set())
    try:
        outcomes = fast.batch.admit_many(
            [offer(n, c, cancel) for n, c, cancel in zip(names, collectors, cancels, strict=True)]
        )
    finally:
        hook.remove()
    assert outcomes[0] is True
    assert outcomes[3] is True
    for outcome in outcomes[1:3]:
        assert isinstance(outcome, WorkerError)
        assert outcome.code == "ABORTED"
    assert prefills == [3]  # the one cancelled before its prefill was not computed
    assert len(fast.batch.running) == 2  # the last prompt's row went to the second slot
    drain(fast)
    for name, collector in ((names[0], collectors[0]), (names[3], collectors[3])):
        assert collector.result is not None
        assert collector.result["tokenIds"] == reference_result("none", name)["tokenIds"], name


def test_a_batched_prefill_stops_when_every_request_in_it_is_cancelled() -> None:
    fast = engine("none", "fast")
    assert fast.batch is not None
    cancel = [threading.Event(), threading.Event()]
    layers: list[int] = []

    def count_and_cancel(*_: Any) -> None:
        layers.append(1)
        for event in cancel:
            event.set()

    text = fast.batch.model.model.text_model
    hook = text.layers[0].register_forward_pre_hook(count_and_cancel)
    try:
        outcomes = fast.batch.admit_many(
            [offer("demo", Collector(), cancel[0]), offer("text only", Collector(), cancel[1])]
        )
    finally:
        hook.remove()
    assert [getattr(o, "code", o) for o in outcomes] == ["ABORTED", "ABORTED"]
    assert layers == [1]
    assert not fast.batch.busy


@pytest.mark.timeout(120)
def test_deterministic_requests_are_prefilled_one_at_a_time(prefills: list[int]) -> None:
    # `deterministic` needs the Triton kernels for its step (not on this CPU); admission reads only the flag.
    fast = engine("none", "fast")
    assert fast.batch is not None
    fast.batch.deterministic = True
    try:
        collectors = [Collector(), Collector()]
        assert fast.batch.admit_many([offer("demo", collectors[0]), offer("text only", collectors[1])]) == [True, True]
    finally:
        fast.batch.deterministic = False
    assert prefills == [1, 1]
    drain(fast)
    assert all(c.result is not None for c in collectors)


def test_more_requests_than_the_batch_has_room_for_are_refused_whole() -> None:
    fast = engine("none", "fast")
    assert fast.batch is not None
    room = fast.batch.room()
    with pytest.raises(ValueError, match="room"):
        fast.batch.admit_many([offer("text only", Collector()) for _ in range(room + 1)])
    assert not fast.batch.busy
