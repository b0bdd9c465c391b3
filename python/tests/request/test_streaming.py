"""The token streamer with the tiny model's real tokenizer: deltas concatenate to the decoded text."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import TINY_MODEL

from idefics2_worker.engine.reference_generate import CancelCriteria
from idefics2_worker.request.streaming import TokenStreamer


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


@pytest.mark.parametrize("text", ["The shape is red.", "Tōkyō 東京 , ok !", "a  b\n\nc ", "🗼🗼"])
def test_deltas_concatenate_to_the_decoded_text_and_never_hold_half_a_character(tokenizer, text: str) -> None:
    end_of_utterance = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    ids = [*tokenizer(text, add_special_tokens=False)["input_ids"], end_of_utterance]
    events: list[tuple[str, list[int]]] = []

    def decode(token_ids: list[int]) -> str:
        return tokenizer.batch_decode([token_ids], skip_special_tokens=True)[0]

    streamer = TokenStreamer(decode, lambda delta, new: events.append((delta, new)), threading.Event())
    streamer.put(torch.tensor([[1, 5, 6]]))  # the prompt comes first and is not streamed
    for token in ids:
        streamer.put(torch.tensor([token]))
    final = decode(ids)
    rest = streamer.finish(final)
    assert [new for _, new in events] == [[token] for token in ids]
    assert "".join(delta for delta, _ in events) + rest == final
    assert all("\ufffd" not in delta for delta, _ in events)


def test_the_cancel_criteria_says_stop_for_every_row_once_the_event_is_set() -> None:
    cancel = threading.Event()
    criteria = CancelCriteria(cancel)
    input_ids = torch.zeros((2, 4), dtype=torch.long)
    assert criteria(input_ids, torch.zeros(2, 10)).tolist() == [False, False]
    cancel.set()
    assert criteria(input_ids, torch.zeros(2, 10)).tolist() == [True, True]
