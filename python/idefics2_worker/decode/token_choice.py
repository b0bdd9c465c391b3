"""Choosing each token on the fast path with transformers' own logits processors, so greedy and sampling
mean what they mean in generate().

The three calls below are transformers' private generation helpers, the same ones generate() makes; they are
not public API and may change between releases. Checked against transformers 5.17.0 (the pinned version,
python/requirements.txt); the fast decoder's CPU tests compare its tokens with generate()'s, so a change there
fails those tests rather than changing answers silently.
"""

from __future__ import annotations

import copy
import functools
import math
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..protocol.params import GenerateParams

# Distinct sets of generation arguments kept by `PreparedGenerationConfigs` (sampling settings vary per request).
KEPT_CONFIGS = 64
# The special tokens `_prepare_special_tokens` sets on a GenerationConfig, as tensors.
SPECIAL_TOKEN_TENSORS = ("_bos_token_tensor", "_eos_token_tensor", "_pad_token_tensor", "_decoder_start_token_tensor")


class PreparedGenerationConfigs:
    """transformers' `_prepare_generation_config` for one model, kept per distinct set of generation arguments; each
    call gets its own copy.

    Each preparation first checks the model's config for legacy generation parameters by building a default config of
    its class: for Idefics2 a fresh Idefics2Config with its vision, perceiver and text configs, each validated field
    by field (~4.6 ms of the ~4.7 a preparation takes on this project's 2-core CI machine). The model thread does it
    per request, so eight requests admitted together paid it eight times over: kept, eight text requests' admission
    on an H200 machine took 59 ms instead of 93 (H30). The result depends only on the arguments and the model's
    (unchanging) configs.

    Asked with a device, the kept config also has transformers' special-token tensors on it
    (`_prepare_special_tokens`, as generate() sets them): made once, not per request. Made per request, each made
    three host-to-device copies and two reads back (`.any()`), 40 synchronisations for eight text requests admitted
    together on an H200 machine, each leaving the GPU idle while the host went on (H84)."""

    def __init__(self, model: Any, limit: int = KEPT_CONFIGS) -> None:
        self.model = model
        self.limit = limit
        self._kept: OrderedDict[str, tuple[Any, dict[str, Any]]] = OrderedDict()

    def prepare(self, kwargs: Mapping[str, Any], device: torch.device | None = None) -> tuple[Any, dict[str, Any]]:
        """What `model._prepare_generation_config(None, **kwargs)` returns: the GenerationConfig and model kwargs; with
        `device`, the config's special tokens prepared there as generate() prepares them."""
        key = repr((sorted(kwargs.items()), str(device)))  # repr tells 1, 1.0 and True apart
        kept = self._kept.get(key)
        if kept is None:
            kept = self.model._prepare_generation_config(None, **kwargs)
            if device is not None:
                self.model._prepare_special_tokens(kept[0], True, device=device, batch_size=1)
            self._kept[key] = kept
            if len(self._kept) > self.limit:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        config, model_kwargs = kept
        # The special tokens' tensors are shared, not copied: nothing writes them, and requests that share them let
        # `chosen_tokens` hold EOS back for all their rows at once.
        shared = [getattr(config, name, None) for name in SPECIAL_TOKEN_TENSORS]
        memo: dict[int, Any] = {id(tensor): tensor for tensor in shared if isinstance(tensor, torch.Tensor)}
        return copy.deepcopy(config, memo), copy.deepcopy(model_kwargs)


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
    config, model_kwargs = configs.prepare(kwargs, input_ids.device)
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
    held = _held_eos(rows)
    if held is None:
        return torch.cat([_choice(logits[i : i + 1], *row) for i, row in enumerate(rows)])
    # Greedy rows, without processors or with ones that only hold EOS back until a length (minNewTokens, min_length):
    # the same scores as those processors give, in one or a few launches for all rows instead of ~5 per row and step
    # (H84), then one argmax over the rows.
    scores = logits[: len(rows)]
    if any(held):
        scores = scores.clone()
        kinds = {id(processor.eos_token_id) for processors in held for processor in processors}
        if all(held) and len(kinds) == 1:
            scores.masked_fill_(_eos_mask(held[0][0], scores), -math.inf)
        else:
            for row, processors in enumerate(held):
                for processor in processors:
                    scores[row].masked_fill_(_eos_mask(processor, scores), -math.inf)
    return scores.argmax(dim=-1)


@functools.cache
def _length_gated_kinds() -> tuple[type, type]:
    from transformers.generation.logits_process import MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor

    return MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor


def _held_eos(rows: Sequence[tuple[Any, TokenHistory | None, torch.Generator | None]]) -> list[list[Any]] | None:
    """Per greedy row, its processors that hold EOS back at the row's length now; None where a row samples or has a
    processor other than transformers' MinLength and MinNewTokensLength ones, which read the ids' length only."""
    min_length, min_new_tokens = _length_gated_kinds()
    held: list[list[Any]] = []
    for processors, history, generator in rows:
        if generator is not None:
            return None
        row: list[Any] = []
        if processors and history is not None:  # as `_choice`: processors apply where there is a history
            for processor in processors:
                if type(processor) is min_length:
                    holding = history.length < processor.min_length
                elif type(processor) is min_new_tokens:
                    holding = history.length - processor.prompt_length_to_skip < processor.min_new_tokens
                else:
                    return None
                if holding:
                    row.append(processor)
        held.append(row)
    return held


# Each processor's EOS mask over the vocabulary (its `torch.isin(arange(vocab), eos)`), made once per request.
_EOS_MASKS: weakref.WeakKeyDictionary[Any, torch.Tensor] = weakref.WeakKeyDictionary()


def _eos_mask(processor: Any, scores: torch.Tensor) -> torch.Tensor:
    mask = _EOS_MASKS.get(processor)
    if mask is None or mask.shape[-1] != scores.shape[-1] or mask.device != scores.device:
        vocabulary = torch.arange(scores.shape[-1], device=scores.device)
        mask = torch.isin(vocabulary, processor.eos_token_id)
        _EOS_MASKS[processor] = mask
    return mask


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
