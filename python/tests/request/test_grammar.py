"""Structured output: llguidance's mask on the tiny model, through generate() and the fast decoder's batch."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import torch
from conftest import load_params
from demo_inputs import as_payload, demo_images

from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.params import parse_generate, parse_load
from idefics2_worker.protocol.results import GenerationResult
from idefics2_worker.request.grammar import allowed_tokens

ENGINES: dict[str, Engine] = {}

SCHEMA = {
    "type": "object",
    "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
    },
    "required": ["colour", "count", "tags"],
    "additionalProperties": False,
}


def engine(decoder: str) -> Engine:
    if decoder not in ENGINES:
        loaded = Engine()
        loaded.load(parse_load(load_params(decoder=decoder)), threading.Event(), lambda *_: None)
        ENGINES[decoder] = loaded
    return ENGINES[decoder]


def request(grammar: dict[str, str] | None, **options: Any) -> tuple[Any, bytes]:
    specs, payload = as_payload(demo_images()[1:])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is this?"}]}]
    raw = {
        "messages": messages,
        "images": specs,
        "options": {"maxNewTokens": 60, "grammar": grammar, **options},
        "stream": True,
    }
    return parse_generate(raw, len(payload)), payload


def json_schema(schema: dict[str, Any]) -> dict[str, str]:
    return {"type": "json_schema", "source": json.dumps(schema)}


def reference(grammar: dict[str, str] | None, **options: Any) -> dict[str, Any]:
    params, payload = request(grammar, **options)
    deltas: list[str] = []
    result = engine("reference").generate(params, payload, lambda text, _: deltas.append(text), threading.Event())
    assert "".join(deltas) == result.text
    return result.to_wire()


class Collector:
    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def on_done(self, result: GenerationResult | None, error: BaseException | None) -> None:
        self.result, self.error = (result.to_wire() if result is not None else None), error


def fast_batch(requests: list[tuple[dict[str, str] | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Admits every request into one running batch, then steps it to the end."""
    fast = engine("fast")
    assert fast.batch is not None
    collectors = []
    for grammar, options in requests:
        params, payload = request(grammar, **options)
        collector = Collector()
        fast.batch.admit(params, payload, lambda *_: None, threading.Event(), collector.on_done)
        collectors.append(collector)
    for _ in range(1000):
        if not fast.batch.busy:
            break
        fast.batch.step()
    results = []
    for collector in collectors:
        assert collector.error is None
        assert collector.result is not None
        results.append(collector.result)
    return results


def check_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert set(value) == {"colour", "count", "tags"}
    assert value["colour"] in {"red", "green", "blue"}
    assert 0 <= value["count"] <= 9
    assert len(value["tags"]) <= 2
    assert all(isinstance(tag, str) and len(tag) <= 4 for tag in value["tags"])
    return value


@pytest.mark.timeout(120)
@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_a_schema_answer_parses_and_validates_greedy_and_sampled(decoder: str) -> None:
    for options in ({}, {"doSample": True, "temperature": 1.5, "seed": 3}):
        result = reference(json_schema(SCHEMA), **options) if decoder == "reference" else None
        if result is None:
            [result] = fast_batch([(json_schema(SCHEMA), options)])
        assert result["finishReason"] == "stop"
        check_object(result["text"])


@pytest.mark.timeout(120)
def test_both_decoders_give_the_same_structured_tokens() -> None:
    assert fast_batch([(json_schema(SCHEMA), {})])[0]["tokenIds"] == reference(json_schema(SCHEMA))["tokenIds"]


@pytest.mark.timeout(120)
def test_a_free_request_in_a_batch_with_schemas_gets_the_ids_it_gets_alone() -> None:
    alone = fast_batch([(None, {})])[0]
    mixed = fast_batch([(json_schema(SCHEMA), {}), (None, {}), ({"type": "regex", "source": "(red|green)"}, {})])
    assert mixed[1]["tokenIds"] == alone["tokenIds"]
    assert mixed[1]["tokenIds"] == reference(None)["tokenIds"]
    check_object(mixed[0]["text"])
    assert mixed[2]["text"] in {"red", "green"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_an_answer_cut_off_before_the_object_closes_is_incomplete_structure(decoder: str) -> None:
    if decoder == "reference":
        result = reference(json_schema(SCHEMA), maxNewTokens=5)
    else:
        [result] = fast_batch([(json_schema(SCHEMA), {"maxNewTokens": 5})])
    assert result["finishReason"] == "incomplete_structure"
    assert len(result["tokenIds"]) == 5
    assert result["text"].startswith("{")


@pytest.mark.parametrize(
    ("grammar", "named"),
    [
        (json_schema({"type": "object", "not": {"type": "string"}}), "not"),
        (json_schema({"type": "string", "format": "bogus"}), "bogus"),
        ({"type": "json_schema", "source": "{not json"}, "not valid JSON"),
        ({"type": "json_schema", "source": "[1]"}, "JSON Schema object"),
        ({"type": "regex", "source": "(red"}, "regex"),
    ],
)
@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_a_grammar_llguidance_cannot_compile_is_invalid_options_naming_it(
    grammar: dict[str, str], named: str, decoder: str
) -> None:
    params, payload = request(grammar)
    loaded = engine(decoder)

    def run() -> None:
        if decoder == "reference":
            loaded.generate(params, payload, lambda *_: None, threading.Event())
        else:
            assert loaded.batch is not None
            loaded.batch.admit(params, payload, lambda *_: None, threading.Event(), lambda *_: None)

    with pytest.raises(WorkerError) as refused:
        run()
    assert refused.value.code == "INVALID_OPTIONS"
    assert named in refused.value.message
    if decoder == "fast":
        assert loaded.batch is not None
        assert not loaded.batch.busy


def test_a_schema_with_beam_search_is_refused() -> None:
    params, payload = request(json_schema(SCHEMA), numBeams=2)
    with pytest.raises(WorkerError, match="numBeams") as refused:
        engine("reference").generate(params, payload, lambda *_: None, threading.Event())
    assert refused.value.code == "INVALID_OPTIONS"


def test_the_packed_bitmask_unpacks_bit_by_bit() -> None:
    words = torch.tensor([0b1011, -(2**31)], dtype=torch.int32)
    allowed = allowed_tokens(words, 70)
    assert allowed.nonzero().flatten().tolist() == [0, 1, 3, 63]
    assert allowed.shape == (70,)
    assert allowed_tokens(words, 40).shape == (40,)
