"""How a request ends: its finish reason and its result."""

from __future__ import annotations

from collections.abc import Sequence

from ..protocol.results import FinishReason, GenerationResult, Timings, Usage
from .prompt import PreparedPrompt


def finish_reason(
    ids: list[int], eos_ids: Sequence[int], text: str, stop_strings: list[str] | None, limit: int | None
) -> FinishReason:
    if ids and ids[-1] in eos_ids:
        return "stop"
    if stop_strings and (any(text.endswith(s) for s in stop_strings) or (limit is not None and len(ids) < limit)):
        return "stop_string"
    return "length"


def generation_result(  # noqa: PLR0917 - one result, built from each of its parts
    prepared: PreparedPrompt, ids: list[int], text: str, reason: FinishReason, first_token_at: float, finished: float
) -> GenerationResult:
    return GenerationResult(
        text=text,
        token_ids=ids,
        finish_reason=reason,
        usage=Usage(prepared.prompt_tokens, prepared.image_tokens, len(ids)),
        timings=Timings(prepared.started, prepared.preprocessed, first_token_at, finished, len(ids)),
    )
