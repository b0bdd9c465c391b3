"""Continuous batching: requests join the running batch between decode steps and leave when they finish.

Each request is prepared and prefilled on its own (the reference's processor call and first forward pass),
then decoded together with the others, one token per request per step, through `DecodeGraphs`. Token choice
uses transformers' own logits processors for the request's options, so greedy and sampling mean what they
mean in generate(). Options this path does not implement (beam search, stop strings) go to generate().
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .decode_graph import DecodeGraphs
from .generation import (
    PreparedPrompt,
    aborted,
    finish_reason,
    generation_result,
    prepare_prompt,
    text_decoder,
)
from .params import GenerateParams
from .prefill import prefill
from .streaming import OnToken, TokenStreamer

if TYPE_CHECKING:
    from .engine import Engine

OnDone = Callable[[dict[str, Any] | None, BaseException | None], None]
FIRST_STRETCH = 512  # new tokens the KV cache holds room for at admission


@dataclass(eq=False)
class _Sequence:
    prepared: PreparedPrompt
    limit: int
    eos_ids: set[int]
    processors: Any
    sample: bool
    generator: torch.Generator | None
    streamer: TokenStreamer | None
    on_token: OnToken
    cancel: threading.Event
    on_done: OnDone
    position: int
    ids: list[int] = field(default_factory=list)
    history: torch.Tensor | None = None
    first_step_at: float = 0.0


class BatchDecoder:
    """Owns the running sequences; `admit` adds one, `step` advances all by one token."""

    def __init__(self, engine: Engine, max_batch: int, vision_chunk: int, use_graphs: bool) -> None:
        self.engine = engine
        self.model = engine.model
        self.graphs = DecodeGraphs(engine.model, max_batch, use_graphs)
        self.vision_chunk = vision_chunk
        self.running: list[_Sequence] = []
        self._decode = text_decoder(engine.processor)

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def has_room(self) -> bool:
        return len(self.running) < self.graphs.max_batch

    def accepts(self, params: GenerateParams) -> bool:
        kwargs = params.generate_kwargs
        return int(kwargs.get("num_beams") or 1) == 1 and not kwargs.get("stop_strings")

    def admit(
        self, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event, on_done: OnDone
    ) -> bool:
        """Prepares and prefills one request, which then runs with the next `step`; errors are raised to the caller.

        Returns False, having started nothing, for a request longer than the model's sliding window: the step
        attends to every cached position, so such a request must go to generate().
        """
        model = self.model
        prepared = prepare_prompt(self.engine, params, payload)
        config, processors = self._generation_config(params, prepared)
        limit = _new_token_limit(config, prepared.prompt_tokens)
        total = prepared.prompt_tokens + limit
        if not self.graphs.supports(total):
            return False
        if cancel.is_set():
            raise aborted()
        generator = None
        sample = bool(config.do_sample)
        if sample:
            generator = torch.Generator(device=model.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        streamer = TokenStreamer(self._decode, on_token, cancel) if params.stream else None
        if streamer is not None:
            streamer.put(prepared.inputs["input_ids"])
        # Room for the prompt and a first stretch of answer; `step` grows the cache when a sequence needs more,
        # so a large maxNewTokens that ends at EOS early never allocates its whole length.
        self.graphs.ensure(len(self.running) + 1, prepared.prompt_tokens + min(limit, FIRST_STRETCH))
        cache, logits = prefill(model, prepared.inputs, self.vision_chunk)
        slot = len(self.running)
        self.graphs.store_prefill(slot, cache, prepared.prompt_tokens)
        del cache
        sequence = _Sequence(
            prepared=prepared,
            limit=limit,
            eos_ids=set(self.engine.eos_ids),
            processors=processors,
            sample=sample,
            generator=generator,
            streamer=streamer,
            on_token=on_token,
            cancel=cancel,
            on_done=on_done,
            # The first token, chosen from the prefill's logits, is fed at the prompt's length.
            position=prepared.prompt_tokens - 1,
            history=prepared.inputs["input_ids"] if processors else None,
        )
        # Chosen before the sequence joins, so a failing choice leaves nothing running for this request.
        token = self._choose(sequence, logits)
        sequence.first_step_at = time.perf_counter()
        self.running.append(sequence)
        self._advance([(sequence, token)])
        return True

    def step(self) -> None:
        """Advances every running sequence by one token and finishes those that are done."""
        count = len(self.running)
        if count == 0:
            return
        graphs = self.graphs
        needed = max(s.position for s in self.running) + 1
        if needed > graphs.length:
            graphs.ensure(count, max(needed, 2 * graphs.length))
        last = torch.tensor([s.ids[-1] for s in self.running], dtype=torch.long)
        positions = torch.tensor([s.position for s in self.running], dtype=torch.long)
        graphs.tokens[:count].copy_(last, non_blocking=False)
        graphs.positions[:count].copy_(positions, non_blocking=False)
        logits = graphs.run(count)
        if all(not s.processors and not s.sample for s in self.running):
            chosen = logits.argmax(dim=-1).tolist()
        else:
            chosen = [self._choose(s, logits[i : i + 1]) for i, s in enumerate(self.running)]
        self._advance(list(zip(self.running, chosen, strict=True)))

    def cancel_all(self, error: BaseException) -> None:
        for sequence in list(self.running):
            self._finish(sequence, None, error)

    def _generation_config(self, params: GenerateParams, prepared: PreparedPrompt) -> tuple[Any, Any]:
        from transformers.generation.logits_process import LogitsProcessorList

        model = self.model
        kwargs = dict(params.generate_kwargs)
        kwargs["eos_token_id"] = list(self.engine.eos_ids)
        config, model_kwargs = model._prepare_generation_config(None, **kwargs)
        input_ids = prepared.inputs["input_ids"]
        model._prepare_special_tokens(config, True, device=input_ids.device, batch_size=1)
        processors = model._get_logits_processor(
            generation_config=config,
            input_ids_seq_length=prepared.prompt_tokens,
            encoder_input_ids=input_ids,
            prefix_allowed_tokens_fn=None,
            logits_processor=LogitsProcessorList(),
            device=input_ids.device,
            model_kwargs=model_kwargs,
        )
        return config, processors

    def _choose(self, sequence: _Sequence, logits: torch.Tensor) -> int:
        scores = logits
        if sequence.processors:
            scores = sequence.processors(sequence.history, scores)
        if sequence.sample:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            return int(torch.multinomial(probs, num_samples=1, generator=sequence.generator)[0, 0])
        return int(torch.argmax(scores, dim=-1)[0])

    def _advance(self, chosen: list[tuple[_Sequence, int]]) -> None:
        for sequence, token in chosen:
            sequence.ids.append(token)
            sequence.position += 1
            if sequence.history is not None:
                extra = torch.tensor([[token]], dtype=torch.long, device=sequence.history.device)
                sequence.history = torch.cat([sequence.history, extra], dim=-1)
            if sequence.streamer is not None:
                sequence.streamer.put(torch.tensor([token]))
            if sequence.cancel.is_set():
                self._finish(sequence, None, aborted())
            elif token in sequence.eos_ids or len(sequence.ids) >= sequence.limit:
                self._finish(sequence, self._result(sequence), None)

    def _result(self, sequence: _Sequence) -> dict[str, Any]:
        finished = time.perf_counter()
        text = self._decode(sequence.ids)
        if sequence.streamer is not None:
            rest = sequence.streamer.finish(text)
            if rest:
                sequence.on_token(rest, [])
        reason = finish_reason(sequence.ids, self.engine.eos_ids, text, None, sequence.limit)
        return generation_result(sequence.prepared, sequence.ids, text, reason, sequence.first_step_at, finished)

    def _finish(self, sequence: _Sequence, result: dict[str, Any] | None, error: BaseException | None) -> None:
        slot = self.running.index(sequence)
        last = len(self.running) - 1
        if slot != last:
            self.graphs.move(last, slot)
            self.running[slot] = self.running[last]
        self.running.pop()
        sequence.on_done(result, error)


def _new_token_limit(config: Any, prompt_tokens: int) -> int:
    if config.max_new_tokens is not None:
        return int(config.max_new_tokens)
    return max(1, int(config.max_length) - prompt_tokens)
