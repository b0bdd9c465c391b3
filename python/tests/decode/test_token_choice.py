"""The ids logits processors read grow without copying the whole history per token, and stay what cat gave; each
row's choice is its own; the kept generation configs are transformers' own."""

from __future__ import annotations

from typing import Any

import torch

from idefics2_worker.decode.token_choice import PreparedGenerationConfigs, TokenHistory, choose_token, chosen_tokens


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


def _tiny_model() -> Any:
    from conftest import TINY_MODEL
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(TINY_MODEL, device_map="cpu")


def test_kept_configs_are_transformers_own_for_each_set_of_arguments_and_copies() -> None:
    model = _tiny_model()
    configs = PreparedGenerationConfigs(model)
    argument_sets = [
        {"max_new_tokens": 16, "eos_token_id": [2]},
        {"max_new_tokens": 16, "min_new_tokens": 4, "eos_token_id": [2]},
        {"max_new_tokens": 16, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "eos_token_id": [2]},
        {"max_new_tokens": 16, "do_sample": True, "temperature": 1, "top_k": 5, "eos_token_id": [2, 3]},
        {"max_new_tokens": 16, "do_sample": True, "temperature": 1.0, "top_k": 5, "eos_token_id": [2, 3]},
        {"max_new_tokens": 16, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "eos_token_id": [2]},
    ]
    for _ in range(2):  # the second round comes from what was kept
        for kwargs in argument_sets:
            config, model_kwargs = configs.prepare(kwargs)
            expected, expected_kwargs = model._prepare_generation_config(None, **kwargs)
            assert config.to_dict() == expected.to_dict()
            assert type(config.temperature) is type(expected.temperature)  # 1 and 1.0 are kept apart
            assert model_kwargs == expected_kwargs
    first, _ = configs.prepare(argument_sets[0])
    first.max_new_tokens = 99
    first.eos_token_id.append(7)
    again, _ = configs.prepare(argument_sets[0])
    assert again.max_new_tokens == 16
    assert again.eos_token_id == [2]


def test_kept_configs_skip_transformers_preparation_when_kept_and_keep_at_most_the_limit() -> None:
    model = _tiny_model()
    prepared: list[dict[str, Any]] = []
    own = model._prepare_generation_config

    def counted(config: Any, **kwargs: Any) -> Any:
        prepared.append(kwargs)
        return own(config, **kwargs)

    model._prepare_generation_config = counted
    configs = PreparedGenerationConfigs(model, limit=2)
    a, b, c = ({"max_new_tokens": n, "eos_token_id": [2]} for n in (1, 2, 3))
    for kwargs in (a, a, b, a, b):
        configs.prepare(kwargs)
    assert prepared == [a, b]
    configs.prepare(a)
    configs.prepare(c)  # three kinds with room for two: b, the least recently asked for, goes
    configs.prepare(a)
    configs.prepare(b)
    assert prepared == [a, b, c, b]
