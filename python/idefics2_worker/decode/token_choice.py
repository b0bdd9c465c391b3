"""Choosing each token on the fast path with transformers' own logits processors, so greedy and sampling
mean what they mean in generate().

The three calls below are transformers' private generation helpers, the same ones generate() makes; they are
not public API and may change between releases. Checked against transformers 5.17.0 (the pinned version,
python/requirements.txt); the fast decoder's CPU tests compare its tokens with generate()'s, so a change there
fails those tests rather than changing answers silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..protocol.params import GenerateParams


def generation_config_and_processors(
    model: Any, params: GenerateParams, eos_ids: Sequence[int], input_ids: torch.Tensor, extra: Sequence[Any] = ()
) -> tuple[Any, Any]:
    """The request's GenerationConfig and its LogitsProcessorList, as generate() would build them; `extra` (a
    grammar's mask) goes where generate() puts a caller's processors: after its own, before the sampling warpers."""
    from transformers.generation.logits_process import LogitsProcessorList

    kwargs = dict(params.generate_kwargs)
    kwargs["eos_token_id"] = list(eos_ids)
    config, model_kwargs = model._prepare_generation_config(None, **kwargs)
    model._prepare_special_tokens(config, True, device=input_ids.device, batch_size=1)
    processors = model._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=int(input_ids.shape[-1]),
        encoder_input_ids=input_ids,
        prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList(extra),
        device=input_ids.device,
        model_kwargs=model_kwargs,
    )
    return config, processors


def new_token_limit(config: Any, prompt_tokens: int) -> int:
    if config.max_new_tokens is not None:
        return int(config.max_new_tokens)
    return max(1, int(config.max_length) - prompt_tokens)


class TokenHistory:
    """The prompt and answer ids that logits processors read, in a buffer that doubles when full, so appending a
    token costs O(1) rather than a copy of the whole history."""

    def __init__(self, prompt_ids: torch.Tensor) -> None:
        length = int(prompt_ids.shape[-1])
        self._buffer = torch.empty((1, max(2 * length, 64)), dtype=torch.long, device=prompt_ids.device)
        self._buffer[:, :length] = prompt_ids
        self.length = length

    def append(self, token: int | torch.Tensor) -> None:
        """Adds a token: an int, or a one-element tensor on the history's device (copied there without a read)."""
        if self.length == self._buffer.shape[1]:
            grown = torch.empty((1, 2 * self.length), dtype=torch.long, device=self._buffer.device)
            grown[:, : self.length] = self._buffer
            self._buffer = grown
        self._buffer[0, self.length] = token
        self.length += 1

    def drop_last(self) -> None:
        """Forgets the last token appended (one chosen for a step that was then discarded)."""
        self.length -= 1

    def ids(self) -> torch.Tensor:
        """[1, length]: a view, valid until the next append."""
        return self._buffer[:, : self.length]


def choose_token(
    logits: torch.Tensor, processors: Any, history: TokenHistory | None, generator: torch.Generator | None
) -> int:
    """One token from one row's float32 logits [1, vocab]: processed, then sampled with `generator` or greedy."""
    return int(_choice(logits, processors, history, generator)[0])


def chosen_tokens(
    logits: torch.Tensor, rows: Sequence[tuple[Any, TokenHistory | None, torch.Generator | None]]
) -> torch.Tensor:
    """Each row's token from float32 logits [rows, vocab], as `choose_token` chooses it for that row's (processors,
    history, generator): a [rows] long tensor on the logits' device, queued and not read back, so the next step can be
    fed from it and the host reads all rows at once (a read per row waited for each row's kernels in turn: on an H200,
    ~1.7 ms of host time per batch-8 step when every row had a processor, e.g. minNewTokens)."""
    if all(not processors and generator is None for processors, _, generator in rows):
        return logits[: len(rows)].argmax(dim=-1)  # plain greedy: one argmax over the rows
    return torch.cat([_choice(logits[i : i + 1], *row) for i, row in enumerate(rows)])


def _choice(
    logits: torch.Tensor, processors: Any, history: TokenHistory | None, generator: torch.Generator | None
) -> torch.Tensor:
    """The chosen token as a [1] tensor on the logits' device, not yet read back."""
    scores = logits
    if processors and history is not None:
        scores = processors(history.ids(), scores)
    if generator is not None:
        probs = torch.nn.functional.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator)[0]
    return torch.argmax(scores, dim=-1)
