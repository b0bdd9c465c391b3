"""The ids logits processors read grow without copying the whole history per token, and stay what cat gave."""

from __future__ import annotations

import torch

from idefics2_worker.decode.token_choice import TokenHistory


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
