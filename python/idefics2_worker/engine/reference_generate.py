"""One request through the reference's own `model.generate` call, with streaming and cancel hooked in."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import torch
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList

from ..protocol.params import GenerateParams
from ..protocol.results import GenerationResult
from ..request.cancellation import aborted, stop_on_cancel
from ..request.grammar import request_grammar, structured_finish
from ..request.loaded_model import LoadedModel
from ..request.prompt import prepare_prompt
from ..request.result import finish_reason, generation_result
from ..request.streaming import OnToken, TokenStreamer
from .attention import fastest_attention


class CancelCriteria(StoppingCriteria):
    """Stops generation at the next step once the request's cancel event is set; notes when the first new token
    exists (generate() checks its stopping criteria once per step, after choosing that step's token)."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.first_step_at: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        stop = torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device)
        return cast("torch.BoolTensor", stop)


def run_generation(
    loaded: LoadedModel, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event
) -> GenerationResult:
    model, processor = loaded.model, loaded.processor
    grammar = request_grammar(loaded, params)
    prepared = prepare_prompt(loaded, params, payload, cancel)
    kwargs = dict(params.generate_kwargs)
    if grammar is not None:
        # generate() runs a given processor after its own (penalties, min length) and before temperature and
        # top-k/top-p, so sampling draws only among the tokens the grammar allows.
        kwargs["logits_processor"] = LogitsProcessorList([grammar])
    kwargs["eos_token_id"] = list(loaded.eos_ids)
    if "stop_strings" in kwargs:
        kwargs["tokenizer"] = processor.tokenizer
    timer = CancelCriteria(cancel)
    kwargs["stopping_criteria"] = StoppingCriteriaList([timer])
    beams = int(kwargs.get("num_beams") or model.generation_config.num_beams or 1) > 1
    streamer = TokenStreamer(loaded.decode, on_token, cancel) if params.stream and not beams else None
    if streamer is not None:
        kwargs["streamer"] = streamer
    if params.seed is not None:
        torch.manual_seed(params.seed)
    if cancel.is_set():
        raise aborted()

    with fastest_attention(model), stop_on_cancel(model, cancel):
        output = model.generate(**prepared.inputs, **kwargs)
    finished = time.perf_counter()
    if cancel.is_set():
        raise aborted()

    ids = [int(i) for i in output[0, prepared.prompt_tokens :].tolist()]
    text = loaded.decode(ids)
    if streamer is not None:
        rest = streamer.finish(text)
        if rest:
            on_token(rest, [])
    elif params.stream:
        on_token(text, ids)
    reason = finish_reason(ids, loaded.eos_ids, text, kwargs.get("stop_strings"), kwargs.get("max_new_tokens"))
    if grammar is not None:
        grammar.follow(ids)  # generate() chose the last token after the processor's last call
        reason = structured_finish(reason, grammar)
    return generation_result(prepared, ids, text, reason, timer.first_step_at or finished, finished)
