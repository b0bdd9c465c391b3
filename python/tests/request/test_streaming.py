"""The token streamer with the tiny model's real tokenizer: deltas concatenate to the decoded text."""

from __future__ import annotations

import threading
from collections.abc import Callable

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


def deltas_decoding_every_id(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """What the streamer emitted when it decoded every id each token (before its window)."""
    emitted, deltas = "", []
    for n in range(1, len(ids) + 1):
        text = decode(ids[:n])
        stable = text.rstrip()
        while stable.endswith("\ufffd"):
            stable = stable[:-1].rstrip()
        if not text.startswith(emitted) or len(stable) <= len(emitted):
            deltas.append("")
            continue
        deltas.append(stable[len(emitted) :])
        emitted = stable
    return deltas


def streamed(decode: Callable[[list[int]], str], ids: list[int]) -> tuple[TokenStreamer, list[str], list[str]]:
    """The streamer fed ids one at a time: it, its deltas, and its text() after each id."""
    deltas: list[str] = []
    texts: list[str] = []
    streamer = TokenStreamer(decode, lambda delta, _: deltas.append(delta), threading.Event())
    streamer.put(torch.tensor([[1]]))
    for token in ids:
        streamer.put(torch.tensor([token]))
        texts.append(streamer.text())
    return streamer, deltas, texts


def test_a_window_gives_each_token_the_text_and_delta_of_decoding_every_id(tokenizer) -> None:
    # Random ids over the whole vocabulary (SentencePiece pieces, byte-fallback bytes, special tokens, spaces), and
    # the same with runs of byte tokens that form or break multi-byte characters.
    def decode(token_ids: list[int]) -> str:
        return tokenizer.batch_decode([token_ids], skip_special_tokens=True)[0]

    generator = torch.Generator().manual_seed(0)
    byte_ids = [tokenizer.convert_tokens_to_ids(f"<0x{value:02X}>") for value in (0xE6, 0x9D, 0xB1, 0xF0, 0x9F, 0x97)]
    emitted = 0
    for trial in range(120):
        ids = torch.randint(0, len(tokenizer), (48,), generator=generator).tolist()
        if trial % 2:
            for index, spot in enumerate(torch.randint(0, 40, (6,), generator=generator).tolist()):
                ids[spot : spot + 3] = byte_ids[(trial + index) % 2 * 3 :][:3]
        _, deltas, texts = streamed(decode, ids)
        assert texts == [decode(ids[:n]) for n in range(1, len(ids) + 1)], trial
        assert deltas == deltas_decoding_every_id(decode, ids), trial
        emitted += sum(map(len, deltas))
    assert emitted > 1000


def test_the_windows_stay_short_on_long_multilingual_text(tokenizer) -> None:
    def decode(token_ids: list[int]) -> str:
        return tokenizer.batch_decode([token_ids], skip_special_tokens=True)[0]

    lengths: list[int] = []

    def counted(token_ids: list[int]) -> str:
        lengths.append(len(token_ids))
        return decode(token_ids)

    ids = tokenizer("Tōkyō 東京 , ok ! The shape is red .  a  b\n\nc 🗼🗼 done ." * 8, add_special_tokens=False)[
        "input_ids"
    ]
    deltas: list[str] = []
    streamer = TokenStreamer(counted, lambda delta, _: deltas.append(delta), threading.Event())
    streamer.put(torch.tensor([[1]]))
    for token in ids:
        streamer.put(torch.tensor([token]))
    assert deltas == deltas_decoding_every_id(decode, ids)
    assert "".join(deltas) + streamer.finish(decode(ids)) == decode(ids)
    assert max(lengths) < 16 < len(ids)
