"""The ids logits processors read grow without copying the whole history per token, and stay what cat gave."""

from __future__ import annotations

import torch

from idefics2_worker.decode.token_choice import TokenHistory, choose_token, chosen_tokens


def test_the_history_equals_the_prompt_and_every_appended_token_across_growth() -> None:
    prompt = torch.arange(40).reshape(1, 40)
    history = TokenHistory(prompt)
    expected = prompt
    for token in range(1000, 1300):
        history.append(token)
        expected = torch.cat([expected, torch.tensor([[token]])], dim=-1)
        assert history.length == expected.shape[1]
    assert torch.equal(history.ids(), expected)


def test_appending_reallocates_only_when_the_buffer_is_full() -> None:
    history = TokenHistory(torch.zeros((1, 100), dtype=torch.long))
    buffers = set()
    for token in range(5000):
        history.append(token)
        buffers.add(history.ids().data_ptr())
    # Doubling from 200 to past 5,100 positions: 6 buffers, not one per token.
    assert len(buffers) <= 6


def test_choosing_all_rows_at_once_gives_each_rows_own_choice() -> None:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinNewTokensLengthLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
    )

    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    logits[:, 7] = logits.max() + 1  # token 7 (the EOS below) would win everywhere unless suppressed
    histories = [TokenHistory(torch.randint(0, 50, (1, 6 + row))) for row in range(5)]
    suppress_eos = LogitsProcessorList([MinNewTokensLengthLogitsProcessor(6, 3, eos_token_id=7)])
    penalty = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.3)])

    def rows() -> list:
        return [
            (None, None, None),  # greedy, nothing to process
            (suppress_eos, histories[1], None),  # EOS held back: a token other than 7
            (penalty, histories[2], None),
            (None, None, torch.Generator().manual_seed(11)),  # sampled
            (suppress_eos, histories[4], torch.Generator().manual_seed(12)),
        ]

    one_by_one = [choose_token(logits[i : i + 1], *row) for i, row in enumerate(rows())]
    assert chosen_tokens(logits, rows()).tolist() == one_by_one
    assert one_by_one[0] == 7
    assert one_by_one[1] != 7
    assert one_by_one[4] != 7
    assert chosen_tokens(logits[:0], []).tolist() == []
