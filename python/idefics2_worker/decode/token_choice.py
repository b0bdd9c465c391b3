"""Choosing each token on the fast path with transformers' own logits processors, so greedy and sampling
mean what they mean in generate().

The three calls below are transformers' private generation helpers, the same ones generate() makes; they are
not public API and may change between releases. Checked against transformers 5.17.0 (the pinned version,
python/requirements.txt); the fast decoder's CPU tests compare its tokens with generate()'s, so a change there
fails those tests rather than changing answers silently.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..protocol.params import GenerateParams

# Distinct sets of generation arguments kept by `PreparedGenerationConfigs` (sampling settings vary per request).
KEPT_CONFIGS = 64


class PreparedGenerationConfigs:
    """transformers' `_prepare_generation_config` for one model, kept per distinct set of generation arguments; each
    call gets its own copy.

    Each preparation first checks the model's config for legacy generation parameters by building a default config of
    its class: for Idefics2 a fresh Idefics2Config with its vision, perceiver and text configs, each validated field
    by field (~4.6 ms of the ~4.7 a preparation takes on this project's 2-core CI machine). The model thread does it
    per request, so eight requests admitted together paid it eight times over: kept, eight text requests' admission
    on an H200 machine took 59 ms instead of 93 (H30). The result depends only on the arguments and the model's
    (unchanging) configs."""

    def __init__(self, model: Any, limit: int = KEPT_CONFIGS) -> None:
        self.model = model
        self.limit = limit
        self._kept: OrderedDict[str, tuple[Any, dict[str, Any]]] = OrderedDict()

    def prepare(self, kwargs: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """What `model._prepare_generation_config(None, **kwargs)` returns: the GenerationConfig and model kwargs."""
        key = repr(sorted(kwargs.items()))  # repr tells 1, 1.0 and True apart
        kept = self._kept.get(key)
        if kept is None:
            kept = self.model._prepare_generation_config(None, **kwargs)
            self._kept[key] = kept
            if len(self._kept) > self.limit:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        config, model_kwargs = kept
        return copy.deepcopy(config), copy.deepcopy(model_kwargs)


def generation_config_and_processors(
    configs: PreparedGenerationConfigs,
    params: GenerateParams,
    eos_ids: Sequence[int],
    input_ids: torch.Tensor,
    extra: Sequence[Any] = (),
) -> tuple[Any, Any]:
    """The request's GenerationConfig and its LogitsProcessorList, as generate() would build them for `configs`'
    model; `extra` (a grammar's mask) goes where generate() puts a caller's processors: after its own, before the
    sampling warpers."""
    from transformers.generation.logits_process import LogitsProcessorList

    model = configs.model
    kwargs = dict(params.generate_kwargs)
    kwargs["eos_token_id"] = list(eos_ids)
    config, model_kwargs = configs.prepare(kwargs)
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
