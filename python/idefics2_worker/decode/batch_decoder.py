"""Continuous batching: requests join the running batch between decode steps and leave when they finish.

Requests waiting together are admitted together (`admit_many`, with those that arrive while they are prepared): each
is prepared on its own (the reference's processor call), then their prompts are prefilled in one forward
(`prefill_many`: several prefills in a row stall the running batch for the sum of them, while one batched forward
shares the launches and fills the GPU better; on an H200, 8 blog prefills took 651 ms together against 741 one by
one at bf16, 903 against 1167 at 4-bit), and each row joins the batch in its own slot. A request that fails to
prepare, or that this path does not take, is answered alone; the others go on. They are then decoded together, one
token per request per step, through `DecodeGraphs`. Token choice uses transformers' own logits processors for the
request's options (`token_choice`). Options this path does not implement (beam search, stop strings) go to
generate().

Deterministic (`deterministic=True`): the step's kernels compute each row independently of the others
(`DecodeStep`), and each request is prefilled alone (a batched prefill's rounding depends on its other rows) with a
vision chunk fixed in advance rather than chosen from the card's free memory (which the other requests' caches
change), so a request's tokens do not depend on what else runs. Greedy choice takes the first of equal maxima;
sampling draws from the request's own generator, reproducible when the request gives a seed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
from .prefill import PrefillPlan, prefill, prefill_groups, prefill_many
from .token_choice import (
    PreparedGenerationConfigs,
    TokenHistory,
    choose_token,
    chosen_tokens,
    generation_config_and_processors,
    new_token_limit,
)

OnDone = Callable[[GenerationResult | None, BaseException | None], None]
# What became of an admitted request: True, it runs (its `on_done` will be called); False, this path does not take
# it and nothing started (run it through generate()); an error, it failed before it started (the caller answers it).
Admitted = bool | BaseException
FIRST_STRETCH = 512  # new tokens the KV cache holds room for at admission
DETERMINISTIC_VISION_CHUNK = 1  # sub-images per vision-tower call when deterministic: the lowest peak, always


def invariant_kernels_run(model: Any) -> bool:
    """Whether the batch-invariant kernels `deterministic` needs run on the model's device (Triton on CUDA)."""
    return triton_support.available(model.device)


# One request offered to the batch: its params and payload, where its tokens go, its cancel, where its end goes.
AdmissionFields = tuple[GenerateParams, bytes, OnToken, threading.Event, OnDone]


class Admission(NamedTuple):
    params: GenerateParams
    payload: bytes
    on_token: OnToken
    cancel: threading.Event
    on_done: OnDone


class _AllCancelled(threading.Event):
    """Set once every one of the events is: a batched prefill stops in its next layer only when no request it
    computes is still wanted (a request cancelled alone is dropped when the prefill ends)."""

    def __init__(self, events: Sequence[threading.Event]) -> None:
        super().__init__()
        self._events = list(events)

    def is_set(self) -> bool:
        return all(event.is_set() for event in self._events)


@dataclass(eq=False)
class _Prompt:
    """A request prepared up to its prefill. The rest of its setup (`_sequence_of`: transformers' generation config
    and logits processors, ~9 ms of Python on this project's CPU) is done while the prefill's kernels run."""

    admission: Admission
    prepared: PreparedPrompt
    grammar: GrammarMask | None


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


@dataclass(eq=False)
class _QueuedStep:
    """A step whose kernels are queued: its rows' tokens, chosen on the device and copied back to the host
    without waiting; `tokens()` waits for them. What it changed beyond the cache, to undo if it is discarded."""

    rows: list[_Sequence]
    chosen: torch.Tensor  # [rows] on the host: pinned and filled by the queued copy on CUDA
    copied: torch.cuda.Event | None
    generator_states: list[tuple[torch.Generator, torch.Tensor]]

    def wait(self) -> None:
        if self.copied is not None:
            self.copied.synchronize()

    def tokens(self) -> list[int]:
        self.wait()
        return self.chosen.tolist()


class BatchDecoder:
    """Owns the running sequences; `admit_many` adds waiting requests, `step` advances all by one token.

    With `overlap` (the default on CUDA) a step's successor is queued before the step's tokens are read: fed its
    tokens and positions on the device, it runs while the host streams, checks and finishes the step's tokens
    (~0.3 ms per token on an H200, when the GPU would otherwise wait). When a sequence leaves or joins, the queued
    step is discarded: it wrote only positions the next step writes again before any step reads them (a row's
    position is read once its mask opens there, and the step that opens it writes it), and its token choices are
    undone (history, generator state), so the tokens are those of the step-by-step path. Rows whose grammar mask is
    computed on the host are not overlapped."""

    def __init__(  # noqa: PLR0917 - the decoder's settings
        self,
        loaded: LoadedModel,
        max_batch: int,
        plan: PrefillPlan,
        use_graphs: bool,
        kernels: bool | None = None,
        deterministic: bool = False,
        overlap: bool | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.graphs = DecodeGraphs(loaded.model, max_batch, use_graphs, kernels, deterministic)
        if deterministic and plan.vision_chunk is None:
            plan = dataclasses.replace(plan, vision_chunk=DETERMINISTIC_VISION_CHUNK)
        self.plan = plan
        self.deterministic = deterministic
        # Off the GPU every kernel runs before the host goes on: a step queued ahead would only delay each token.
        self.overlap = self.model.device.type == "cuda" if overlap is None else overlap
        self.running: list[_Sequence] = []
        self._ahead: _QueuedStep | None = None
        self._configs = PreparedGenerationConfigs(self.model)

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def accepts(self, params: GenerateParams) -> bool:
        kwargs = params.generate_kwargs
        return int(kwargs.get("num_beams") or 1) == 1 and not kwargs.get("stop_strings")

    def cache_bytes(self) -> int:
        return self.graphs.cache.nbytes()

    def release(self) -> None:
        """Gives back the KV cache and captured graphs; only while no sequence runs (the next admit regrows them)."""
        if not self.running:
            self.graphs.release()
            if self.plan.vision_graphs is not None:
                self.plan.vision_graphs.release()

    def room(self) -> int:
        """How many more sequences can join now."""
        return self.graphs.max_batch - len(self.running)

    def admit(
        self, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event, on_done: OnDone
    ) -> bool:
        """Prepares and prefills one request, which then runs with the next `step`; errors are raised to the caller.

        Returns False, having started nothing, for a request longer than the model's sliding window: the step
        attends to every cached position, so such a request must go to generate().
        """
        outcome = self.admit_many([Admission(params, payload, on_token, cancel, on_done)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def admit_many(
        self,
        admissions: Sequence[AdmissionFields],
        later: Callable[[int], Sequence[AdmissionFields]] | None = None,
    ) -> list[Admitted]:
        """Prepares each request, prefills them together (within `prefill_groups`' bounds; one at a time when
        deterministic) and lets each join the batch; at most `room()` of them. One outcome per request, in order
        (`Admitted`): a request's failure or refusal is its own, the others run.

        `later(room)`, once the requests are prepared: those that arrived meanwhile (at most `room`), prepared and
        prefilled with them, their outcomes after theirs; asked again until it has none. Requests sent together
        reach the model thread's queue milliseconds apart (the reader thread waits for the GIL while the first is
        prepared; the model thread's `later` waits for them briefly): without it the first would start alone and
        the rest stall it with a second prefill."""
        if len(admissions) > self.room():
            raise ValueError(f"{len(admissions)} requests offered to a batch with room for {self.room()}")
        self._discard_ahead()
        outcomes: list[Admitted] = []
        ready: list[tuple[int, _Prompt]] = []
        pending = list(admissions)
        while pending:
            for fields in pending:
                outcomes.append(False)
                try:
                    prompt = self._prepare(Admission(*fields))
                except Exception as error:
                    outcomes[-1] = error
                    continue
                if prompt is not None:
                    ready.append((len(outcomes) - 1, prompt))
            room = self.room() - len(outcomes)
            pending = list(later(room)) if later is not None and room > 0 else []
            if len(pending) > room:
                raise ValueError(f"{len(pending)} more requests offered to a batch with room for {room}")
        if self.deterministic:
            groups = [[position] for position in range(len(ready))]
        else:
            groups = prefill_groups([prompt.prepared.inputs for _, prompt in ready])
        for group in groups:
            self._prefill_and_join([ready[position] for position in group], outcomes)
        return outcomes

    def _prepare(self, admission: Admission) -> _Prompt | None:
        """The request's prompt and grammar, before its prefill; None when this path does not take it: a prompt and
        the answer's asked length past the model's sliding window (the step attends to every cached position)."""
        grammar = request_grammar(self.loaded, admission.params)
        on_device = self.plan.preprocess_on_device
        prepared = prepare_prompt(
            self.loaded, admission.params, admission.payload, admission.cancel, on_device=on_device
        )
        # The answer's length as asked (generate() defaults it otherwise; `_sequence_of` checks the final one).
        asked = admission.params.generate_kwargs.get("max_new_tokens")
        if not self.graphs.supports(prepared.prompt_tokens + max(1, int(asked or 1))):
            return None
        if admission.cancel.is_set():
            raise aborted()
        return _Prompt(admission, prepared, grammar)

    def _sequence_of(self, prompt: _Prompt) -> _Sequence | None:
        """The request's token choice and streaming; None when its prompt and longest answer pass the sliding window
        (it goes to generate(), as a request this path does not take)."""
        admission, prepared, grammar = prompt.admission, prompt.prepared, prompt.grammar
        model, params = self.model, admission.params
        input_ids = prepared.inputs["input_ids"]
        extra = [grammar] if grammar is not None else []
        config, processors = generation_config_and_processors(
            self._configs, params, self.loaded.eos_ids, input_ids, extra
        )
        limit = new_token_limit(config, prepared.prompt_tokens)
        if not self.graphs.supports(prepared.prompt_tokens + limit):
            return None
        generator = None
        if config.do_sample:
            generator = torch.Generator(device=model.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        streamer = TokenStreamer(self.loaded.decode, admission.on_token, admission.cancel) if params.stream else None
        if streamer is not None:
            streamer.put(input_ids)
        return _Sequence(
            prepared=prepared,
            limit=limit,
            processors=processors,
            generator=generator,
            streamer=streamer,
            on_token=admission.on_token,
            cancel=admission.cancel,
            on_done=admission.on_done,
            # The first token, chosen from the prefill's logits, is fed at the prompt's length.
            position=prepared.prompt_tokens - 1,
            history=TokenHistory(input_ids) if processors else None,
            grammar=grammar,
        )

    def _prefill_and_join(self, group: list[tuple[int, _Prompt]], outcomes: list[Admitted]) -> None:
        """Prefills the group's prompts in one forward; while its kernels run, sets up each request's token choice;
        then stores each row in a slot and chooses its first token."""
        prompts = [prompt for _, prompt in group]
        cancels = [prompt.admission.cancel for prompt in prompts]
        cancel = cancels[0] if len(cancels) == 1 else _AllCancelled(cancels)
        try:
            with stop_on_cancel(self.model, cancel):
                if len(prompts) == 1:
                    cache, logits = prefill(self.model, prompts[0].prepared.inputs, self.plan)
                else:
                    inputs = [prompt.prepared.inputs for prompt in prompts]
                    cache, logits, _lengths = prefill_many(self.model, inputs, self.plan, self._pad_id())
        except Exception as error:
            for index, _ in group:
                outcomes[index] = error
            return
        rows: list[tuple[int, int, _Sequence]] = []  # (outcome index, prefill row, sequence)
        for row, (index, prompt) in enumerate(group):
            try:
                sequence = self._sequence_of(prompt)
            except Exception as error:
                outcomes[index] = error
                continue
            if sequence is not None:
                rows.append((index, row, sequence))
        if not rows:
            return
        try:
            # Room for the prompts and a first stretch of answer; `step` grows the cache when a sequence needs more,
            # so a large maxNewTokens that ends at EOS early never allocates its whole length.
            longest = max(s.prepared.prompt_tokens + min(s.limit, FIRST_STRETCH) for _, _, s in rows)
            self.graphs.ensure(len(self.running) + len(rows), longest)
            for _, _, sequence in rows:
                if sequence.grammar is not None:
                    sequence.grammar.prepare()  # the first mask, on the CPU while the prefill's kernels run
        except Exception as error:
            for index, _, _ in rows:
                outcomes[index] = error
            return
        live = []
        for index, row, sequence in rows:
            if sequence.cancel.is_set():
                outcomes[index] = aborted()
            else:
                live.append((index, row, sequence))
        # Chosen before the sequences join, so a failing choice leaves nothing running for its request.
        chosen: list[tuple[int, int, _Sequence, int, torch.Tensor | int]] = []
        for (index, row, sequence), first in zip(live, _first_tokens(logits, live), strict=True):
            if isinstance(first, Exception):
                outcomes[index] = first
            else:
                chosen.append((index, row, sequence, *first))
        # Their rows of the prefill's cache go into the next slots together: a few kernels, not a copy per layer.
        lengths = [sequence.prepared.prompt_tokens for _, _, sequence, _, _ in chosen]
        self.graphs.store_prefills(len(self.running), cache, [row for _, row, _, _, _ in chosen], lengths)
        del cache
        joined: list[tuple[_Sequence, int]] = []
        for index, _, sequence, token, on_device in chosen:
            if sequence.history is not None:
                sequence.history.append(on_device)
            sequence.first_step_at = time.perf_counter()
            self.running.append(sequence)
            joined.append((sequence, token))
            outcomes[index] = True
        self._advance(joined)

    def _pad_id(self) -> int:
        pad = getattr(self.loaded.processor.tokenizer, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def step(self) -> None:
        """Advances every running sequence by one token and finishes those that are done."""
        count = len(self.running)
        if count == 0:
            return
        graphs = self.graphs
        needed = max(s.position for s in self.running) + 1
        overlap = self.overlap and all(s.grammar is None for s in self.running)
        current, self._ahead = self._ahead, None
        if current is None:
            if needed > graphs.length:
                graphs.ensure(count, max(needed, 2 * graphs.length))
            last = torch.tensor([s.ids[-1] for s in self.running], dtype=torch.long)
            positions = torch.tensor([s.position for s in self.running], dtype=torch.long)
            graphs.tokens[:count].copy_(last, non_blocking=False)
            graphs.positions[:count].copy_(positions, non_blocking=False)
            current = self._queue(feed=overlap)
        # The next step, one position on, where the cache has room for it (growing it waits for a step from the host).
        ahead = self._queue(feed=True) if overlap and needed + 1 <= graphs.length else None
        self._advance(list(zip(current.rows, current.tokens(), strict=True)))
        if ahead is not None:
            if len(self.running) == count:
                self._ahead = ahead
            else:
                self._discard(ahead)

    def _queue(self, feed: bool) -> _QueuedStep:
        """Queues the step for the running rows from the tokens and positions in the graphs' buffers, and its token
        choice; with `feed`, the chosen tokens and next positions go into those buffers for the step after, and the
        sampling generators' states are kept (a fed step may be queued ahead, then discarded)."""
        count, graphs = len(self.running), self.graphs
        sampled = [s.generator for s in self.running if s.generator is not None] if feed else []
        states = [(generator, generator.get_state()) for generator in sampled]
        logits = graphs.run(count)
        # On CUDA the step is queued, not finished: the grammar rows' next masks are computed on the CPU meanwhile
        # (llguidance releases the GIL), and applied per row by their processors once the logits are read.
        for sequence in self.running:
            if sequence.grammar is not None:
                sequence.grammar.prepare()
        chosen = chosen_tokens(logits, [(s.processors, s.history, s.generator) for s in self.running])
        for row, sequence in enumerate(self.running):
            if sequence.history is not None:
                sequence.history.append(chosen[row])
        if feed:
            graphs.tokens[:count].copy_(chosen)
            graphs.positions[:count] += 1
        copied = None
        if chosen.device.type == "cuda":
            host = torch.empty(count, dtype=torch.long, pin_memory=True)
            host.copy_(chosen, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
            chosen = host
        return _QueuedStep(list(self.running), chosen, copied, states)

    def _discard(self, queued: _QueuedStep) -> None:
        """Undoes a queued step's token choices once it has run (see the class's note on what it wrote)."""
        queued.wait()
        for generator, state in queued.generator_states:
            generator.set_state(state)
        for sequence in queued.rows:
            if sequence.history is not None:
                sequence.history.drop_last()

    def _discard_ahead(self) -> None:
        if self._ahead is not None:
            self._discard(self._ahead)
            self._ahead = None

    def cancel_all(self, error: BaseException) -> None:
        self._discard_ahead()
        for sequence in list(self.running):
            self._finish(sequence, None, error)

    def _advance(self, chosen: list[tuple[_Sequence, int]]) -> None:
        for sequence, token in chosen:
            sequence.ids.append(token)
            sequence.position += 1
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


def _first_tokens(
    logits: torch.Tensor, rows: list[tuple[int, int, _Sequence]]
) -> list[tuple[int, torch.Tensor | int] | Exception]:
    """Each row's first token from the prefill's logits, as an int and as a tensor on the logits' device: all
    chosen together and read back once (a read per row waited for each row's choice in turn: 8 of a text group's
    synchronisations on an H200 machine, H84). Where that fails, each row is chosen alone, from the same generator
    states, so one request's failing choice fails only that request."""
    if not rows:
        return []
    choices = [(s.processors, s.history, s.generator) for _, _, s in rows]
    states = [(g, g.get_state()) for _, _, g in choices if g is not None]
    prefill_rows = [row for _, row, _ in rows]
    try:
        if prefill_rows == list(range(len(rows))):
            together = logits[: len(rows)]
        else:
            together = torch.cat([logits[row : row + 1] for row in prefill_rows])
        chosen = chosen_tokens(together, choices)
        return [(token, chosen[i]) for i, token in enumerate(chosen.tolist())]
    except Exception:
        for generator, state in states:
            generator.set_state(state)
    firsts: list[tuple[int, torch.Tensor | int] | Exception] = []
    for (_, row, _), choice in zip(rows, choices, strict=True):
        try:
            token = choose_token(logits[row : row + 1], *choice)
            firsts.append((token, token))
        except Exception as error:
            firsts.append(error)
    return firsts
