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


def _length_gated_rows(eos: torch.Tensor, other_eos: torch.Tensor) -> list:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinLengthLogitsProcessor,
        MinNewTokensLengthLogitsProcessor,
    )

    held = LogitsProcessorList([MinNewTokensLengthLogitsProcessor(6, 3, eos_token_id=eos)])
    passed = LogitsProcessorList([MinNewTokensLengthLogitsProcessor(6, 1, eos_token_id=eos)])
    both = LogitsProcessorList([MinLengthLogitsProcessor(9, eos), MinNewTokensLengthLogitsProcessor(6, 2, other_eos)])
    return [
        (None, None, None),
        (held, TokenHistory(torch.arange(7).reshape(1, 7)), None),  # 1 new token of 3: EOS held back
        (passed, TokenHistory(torch.arange(8).reshape(1, 8)), None),  # 2 of 1: free
        (both, TokenHistory(torch.arange(7).reshape(1, 7)), None),  # both hold theirs back
        (held, None, None),  # processors without a history do not apply, as in `choose_token`
    ]


def test_rows_that_only_hold_eos_back_until_a_length_choose_as_their_processors_would() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    top = logits.max()
    logits[:, 7] = top + 2  # EOS 7 wins unless held back, then 9 (the other EOS), then the rest
    logits[:, 9] = top + 1
    rows = _length_gated_rows(torch.tensor([7]), torch.tensor([9, 7]))
    one_by_one = [choose_token(logits[i : i + 1], *row) for i, row in enumerate(rows)]
    assert chosen_tokens(logits, rows).tolist() == one_by_one
    assert [one_by_one[i] for i in (0, 2, 4)] == [7, 7, 7]  # free, or processors without a history
    assert one_by_one[1] != 7
    assert one_by_one[3] not in (7, 9)
    before = logits.clone()
    chosen_tokens(logits, rows)
    assert torch.equal(logits, before)  # the step's logits are read, not written


def test_rows_holding_back_the_same_eos_are_masked_in_one_launch_and_each_mask_is_made_once() -> None:
    from torch.profiler import ProfilerActivity, profile
    from transformers.generation.logits_process import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

    eos = torch.tensor([7, 3])  # one tensor, as requests with the same arguments share it (PreparedGenerationConfigs)
    rows = [
        (
            LogitsProcessorList([MinNewTokensLengthLogitsProcessor(5, 100, eos_token_id=eos)]),
            TokenHistory(torch.arange(5 + row).reshape(1, 5 + row)),
            None,
        )
        for row in range(8)
    ]
    torch.manual_seed(1)
    steps = [torch.randn(8, 40) + torch.nn.functional.one_hot(torch.tensor(7), 40) * 9 for _ in range(4)]
    with profile(activities=[ProfilerActivity.CPU]) as traced:
        chosen = [chosen_tokens(logits, rows) for logits in steps]
    calls = [event.name for event in traced.events()]
    assert calls.count("aten::isin") == 1  # the shared EOS ids: one mask, made at the first step and kept
    assert calls.count("aten::masked_fill_") == 4  # one a step for all eight rows
    assert calls.count("aten::argmax") == 4
    for logits, tokens in zip(steps, chosen, strict=True):
        assert tokens.tolist() == [choose_token(logits[i : i + 1], *row) for i, row in enumerate(rows)]
        assert not {7, 3} & set(tokens.tolist())


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


def test_configs_asked_with_a_device_carry_transformers_special_tokens_shared_between_copies() -> None:
    model = _tiny_model()
    configs = PreparedGenerationConfigs(model)
    kwargs = {"max_new_tokens": 16, "min_new_tokens": 4, "eos_token_id": [2, 3]}
    config, _ = configs.prepare(kwargs, torch.device("cpu"))
    expected, _ = model._prepare_generation_config(None, **kwargs)
    model._prepare_special_tokens(expected, True, device=torch.device("cpu"), batch_size=1)
    for name in ("_bos_token_tensor", "_eos_token_tensor", "_pad_token_tensor"):
        assert torch.equal(getattr(config, name), getattr(expected, name))
    again, _ = configs.prepare(kwargs, torch.device("cpu"))
    assert again._eos_token_tensor is config._eos_token_tensor  # shared: nothing writes them
    again.max_new_tokens = 99
    assert configs.prepare(kwargs, torch.device("cpu"))[0].max_new_tokens == 16  # the rest is each call's own
    plain, _ = configs.prepare(kwargs)  # without a device: transformers' config as it comes, no tensors
    assert getattr(plain, "_eos_token_tensor", None) is None
