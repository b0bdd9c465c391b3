"""Continuous batching: requests join the running batch between decode steps and leave when they finish.

Each request is prepared and prefilled on its own (the reference's processor call and first forward pass),
then decoded together with the others, one token per request per step, through `DecodeGraphs`. Token choice
uses transformers' own logits processors for the request's options (`token_choice`). Options this path does
not implement (beam search, stop strings) go to generate().

Deterministic (`deterministic=True`): the step's kernels compute each row independently of the others
(`DecodeStep`), and each request is prefilled alone with a vision chunk fixed in advance rather than chosen from the
card's free memory (which the other requests' caches change), so a request's tokens do not depend on what else
runs. Greedy choice takes the first of equal maxima; sampling draws from the request's own generator, reproducible
when the request gives a seed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..kernels import triton_support
from ..protocol.errors import WorkerError
from ..protocol.params import GenerateParams
from ..protocol.results import GenerationResult
from ..request.cancellation import aborted, stop_on_cancel
from ..request.grammar import GrammarMask, request_grammar, structured_finish
from ..request.loaded_model import LoadedModel
from ..request.prompt import PreparedPrompt, prepare_prompt
from ..request.result import finish_reason, generation_result
from ..request.streaming import OnToken, TokenStreamer
from .graphs import DecodeGraphs
from .prefill import PrefillPlan, prefill
from .token_choice import TokenHistory, choose_token, generation_config_and_processors, new_token_limit

OnDone = Callable[[GenerationResult | None, BaseException | None], None]
FIRST_STRETCH = 512  # new tokens the KV cache holds room for at admission
DETERMINISTIC_VISION_CHUNK = 1  # sub-images per vision-tower call when deterministic: the lowest peak, always


def invariant_kernels_run(model: Any) -> bool:
    """Whether the batch-invariant kernels `deterministic` needs run on the model's device (Triton on CUDA)."""
    return triton_support.available(model.device)


@dataclass(eq=False)
class _Sequence:
    prepared: PreparedPrompt
    limit: int
    processors: Any
    generator: torch.Generator | None  # set when sampling
    streamer: TokenStreamer | None
    on_token: OnToken
    cancel: threading.Event
    on_done: OnDone
    position: int
    history: TokenHistory | None  # for logits processors that read earlier tokens
    grammar: GrammarMask | None  # structured output: also among `processors`, fed each token in `_advance`
    ids: list[int] = field(default_factory=list)
    first_step_at: float = 0.0


class BatchDecoder:
    """Owns the running sequences; `admit` adds one, `step` advances all by one token."""

    def __init__(  # noqa: PLR0917 - the decoder's settings
        self,
        loaded: LoadedModel,
        max_batch: int,
        plan: PrefillPlan,
        use_graphs: bool,
        kernels: bool | None = None,
        deterministic: bool = False,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.graphs = DecodeGraphs(loaded.model, max_batch, use_graphs, kernels, deterministic)
        if deterministic and plan.vision_chunk is None:
            plan = dataclasses.replace(plan, vision_chunk=DETERMINISTIC_VISION_CHUNK)
        self.plan = plan
        self.deterministic = deterministic
        self.running: list[_Sequence] = []

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def has_room(self) -> bool:
        return len(self.running) < self.graphs.max_batch

    def accepts(self, params: GenerateParams) -> bool:
        kwargs = params.generate_kwargs
        return int(kwargs.get("num_beams") or 1) == 1 and not kwargs.get("stop_strings")

    def cache_bytes(self) -> int:
        return self.graphs.cache.nbytes()

    def release(self) -> None:
        """Gives back the KV cache and captured graphs; only while no sequence runs (the next admit regrows them)."""
        if not self.running:
            self.graphs.release()

    def admit(
        self, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event, on_done: OnDone
    ) -> bool:
        """Prepares and prefills one request, which then runs with the next `step`; errors are raised to the caller.

        Returns False, having started nothing, for a request longer than the model's sliding window: the step
        attends to every cached position, so such a request must go to generate().
        """
        model = self.model
        grammar = request_grammar(self.loaded, params)
        prepared = prepare_prompt(self.loaded, params, payload, cancel, on_device=self.plan.preprocess_on_device)
        input_ids = prepared.inputs["input_ids"]
        extra = [grammar] if grammar is not None else []
        config, processors = generation_config_and_processors(model, params, self.loaded.eos_ids, input_ids, extra)
        limit = new_token_limit(config, prepared.prompt_tokens)
        if not self.graphs.supports(prepared.prompt_tokens + limit):
            return False
        if cancel.is_set():
            raise aborted()
        generator = None
        if config.do_sample:
            generator = torch.Generator(device=model.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        streamer = TokenStreamer(self.loaded.decode, on_token, cancel) if params.stream else None
        if streamer is not None:
            streamer.put(input_ids)
        # Room for the prompt and a first stretch of answer; `step` grows the cache when a sequence needs more,
        # so a large maxNewTokens that ends at EOS early never allocates its whole length.
        self.graphs.ensure(len(self.running) + 1, prepared.prompt_tokens + min(limit, FIRST_STRETCH))
        with stop_on_cancel(model, cancel):
            cache, logits = prefill(model, prepared.inputs, self.plan)
            if grammar is not None:
                grammar.prepare()  # the first mask, on the CPU while the prefill's kernels run
        slot = len(self.running)
        self.graphs.store_prefill(slot, cache, prepared.prompt_tokens)
        del cache
        sequence = _Sequence(
            prepared=prepared,
            limit=limit,
            processors=processors,
            generator=generator,
            streamer=streamer,
            on_token=on_token,
            cancel=cancel,
            on_done=on_done,
            # The first token, chosen from the prefill's logits, is fed at the prompt's length.
            position=prepared.prompt_tokens - 1,
            history=TokenHistory(input_ids) if processors else None,
            grammar=grammar,
        )
        # Chosen before the sequence joins, so a failing choice leaves nothing running for this request.
        token = choose_token(logits, processors, sequence.history, generator)
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
        # On CUDA the step is queued, not finished: the grammar rows' next masks are computed on the CPU meanwhile
        # (llguidance releases the GIL), and applied per row by their processors once the logits are read.
        for sequence in self.running:
            if sequence.grammar is not None:
                sequence.grammar.prepare()
        if all(not s.processors and s.generator is None for s in self.running):
            chosen = logits.argmax(dim=-1).tolist()
        else:
            chosen = [
                choose_token(logits[i : i + 1], s.processors, s.history, s.generator)
                for i, s in enumerate(self.running)
            ]
        self._advance(list(zip(self.running, chosen, strict=True)))

    def cancel_all(self, error: BaseException) -> None:
        for sequence in list(self.running):
            self._finish(sequence, None, error)

    def _advance(self, chosen: list[tuple[_Sequence, int]]) -> None:
        for sequence, token in chosen:
            sequence.ids.append(token)
            sequence.position += 1
            if sequence.history is not None:
                sequence.history.append(token)
            if sequence.grammar is not None:
                try:
                    sequence.grammar.consume([token])
                except WorkerError as error:
                    self._finish(sequence, None, error)
                    continue
            if sequence.streamer is not None:
                sequence.streamer.put(torch.tensor([token]))
            if sequence.cancel.is_set():
                self._finish(sequence, None, aborted())
            elif token in self.loaded.eos_ids or len(sequence.ids) >= sequence.limit:
                self._finish(sequence, self._result(sequence), None)

    def _result(self, sequence: _Sequence) -> GenerationResult:
        finished = time.perf_counter()
        text = self.loaded.decode(sequence.ids)
        if sequence.streamer is not None:
            rest = sequence.streamer.finish(text)
            if rest:
                sequence.on_token(rest, [])
        reason = structured_finish(
            finish_reason(sequence.ids, self.loaded.eos_ids, text, None, sequence.limit), sequence.grammar
        )
        return generation_result(sequence.prepared, sequence.ids, text, reason, sequence.first_step_at, finished)

    def _finish(self, sequence: _Sequence, result: GenerationResult | None, error: BaseException | None) -> None:
        slot = self.running.index(sequence)
        last = len(self.running) - 1
        if slot != last:
            self.graphs.move(last, slot)
            self.running[slot] = self.running[last]
        self.running.pop()
        sequence.on_done(result, error)
