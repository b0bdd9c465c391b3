"""A prefilled group's first tokens are chosen together, each as it would be alone; a failing choice fails its row."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from idefics2_worker.decode.batch_decoder import _first_tokens
from idefics2_worker.decode.token_choice import TokenHistory, choose_token


def _sequence(processors: Any = None, history: TokenHistory | None = None, seed: int | None = None) -> Any:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return SimpleNamespace(processors=processors, history=history, generator=generator)


def _alone(logits: torch.Tensor, row: int, sequence: Any, seed: int | None) -> int:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return choose_token(logits[row : row + 1], sequence.processors, sequence.history, generator)


def test_first_tokens_of_a_group_are_each_rows_own_choice_from_its_prefill_row() -> None:
    from transformers.generation.logits_process import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

    torch.manual_seed(0)
    logits = torch.randn(4, 30)
    logits[:, 5] = logits.max() + 1  # EOS 5 wins where nothing holds it back
    hold = LogitsProcessorList([MinNewTokensLengthLogitsProcessor(3, 2, eos_token_id=5)])
    seeds = [None, None, 7]
    sequences = [_sequence(), _sequence(hold, TokenHistory(torch.arange(3).reshape(1, 3))), _sequence(seed=7)]
    rows = [(10, 0, sequences[0]), (11, 2, sequences[1]), (12, 3, sequences[2])]  # prefill row 1 was not admitted
    firsts = _first_tokens(logits, rows)
    expected = [_alone(logits, row, s, seed) for (_, row, s), seed in zip(rows, seeds, strict=True)]
    assert [first[0] for first in firsts if not isinstance(first, Exception)] == expected
    assert expected[0] == 5
    assert expected[1] != 5
    for first, token in zip(firsts, expected, strict=True):
        assert not isinstance(first, Exception)
        assert int(first[1]) == token  # the token on the logits' device, for the history


def test_a_failing_choice_fails_its_row_only_and_the_others_choose_from_unchanged_generators() -> None:
    from transformers.generation.logits_process import LogitsProcessorList

    class Failing:
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("grammar rejected the prompt")

    torch.manual_seed(1)
    logits = torch.randn(3, 30)
    rows = [
        (0, 0, _sequence(seed=3)),
        (1, 1, _sequence(LogitsProcessorList([Failing()]), TokenHistory(torch.arange(4).reshape(1, 4)))),
        (2, 2, _sequence(seed=4)),
    ]
    firsts = _first_tokens(logits, rows)
    assert isinstance(firsts[1], RuntimeError)
    for (_, row, sequence), first, seed in zip(rows, firsts, (3, None, 4), strict=True):
        if seed is not None:
            assert not isinstance(first, Exception)
            assert first[0] == _alone(logits, row, sequence, seed)


@pytest.mark.parametrize("count", [0, 1])
def test_no_rows_or_one_row(count: int) -> None:
    logits = torch.randn(2, 30)
    rows = [(0, 1, _sequence())][:count]
    assert [first[0] for first in _first_tokens(logits, rows) if not isinstance(first, Exception)] == [
        int(logits[1].argmax())
    ][:count]
