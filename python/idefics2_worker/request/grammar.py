"""Structured output: the answer constrained to a JSON Schema or a regular expression, token by token.

llguidance (Microsoft's grammar engine, the one vLLM, SGLang and llama.cpp use) compiles the grammar against the
loaded model's tokenizer and, at each step, computes the set of tokens that keep the answer inside the grammar as a
bitmask (one bit per token, on the CPU, with the GIL released). `GrammarMask` applies it to one request's logits:
as a transformers LogitsProcessor in generate() (the reference path), and per row in the fast decoder, which
computes the next mask while the device runs the step (`prepare`) and applies it when the logits are there.
EOS is allowed only where the grammar is complete, so an answer ends at EOS only as a whole object; one cut off by
max_new_tokens first finishes with `incomplete_structure`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers.generation.logits_process import LogitsProcessor

from ..protocol.errors import WorkerError
from ..protocol.params import GenerateParams, GrammarSpec
from ..protocol.results import FinishReason
from .loaded_model import LoadedModel

# python/requirements.txt pins the same version; named in the fix when a bring-your-own interpreter lacks it.
LLGUIDANCE_REQUIREMENT = "llguidance==1.9.1"
# Compact JSON (no whitespace between tokens): fewer tokens, and no run of blanks a model could loop in.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}
_BITS = 32

_lock = threading.Lock()
# The llguidance tokenizer of the loaded model's tokenizer (building it walks the whole vocabulary): one entry,
# keyed by the tokenizer object (held, so its id stays its own), the logits' width and the EOS ids.
_cached: dict[tuple[int, int, tuple[int, ...]], tuple[Any, Any]] = {}


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
    except ImportError as error:
        raise WorkerError(
            "MISSING_PYTHON_PACKAGE",
            f"Structured output (schema, choices, regex) needs llguidance, which the worker cannot import: {error}",
            f"Install it into the worker's Python: `python -m pip install {LLGUIDANCE_REQUIREMENT}` "
            "(the managed environment has it: `idefics2 setup`).",
        ) from error
    return llguidance


def grammar_tokenizer(tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]) -> Any:
    """The llguidance tokenizer for `tokenizer`, sized to the logits, with every id that ends a turn as its EOS."""
    llguidance = _llguidance()
    key = (id(tokenizer), vocab_size, tuple(eos_ids))
    with _lock:
        if key not in _cached:
            built = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids))
            _cached.clear()
            _cached[key] = (tokenizer, built)
        return _cached[key][1]


def _grammar_text(llguidance: Any, spec: GrammarSpec) -> str:
    if spec.type == "regex":
        return llguidance.LLMatcher.grammar_from_regex(spec.source)
    try:
        schema = json.loads(spec.source)
    except ValueError as error:
        raise WorkerError("INVALID_OPTIONS", f"The `schema` is not valid JSON: {error}") from error
    if not isinstance(schema, dict):
        raise WorkerError("INVALID_OPTIONS", f"The `schema` must be a JSON Schema object, got {type(schema).__name__}")
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except ValueError as error:
        raise WorkerError("INVALID_OPTIONS", f"The `schema` cannot be read: {error}") from error


def compile_grammar(spec: GrammarSpec, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]) -> GrammarMask:
    """A fresh matcher for one request; a grammar llguidance cannot compile is INVALID_OPTIONS naming the construct."""
    llguidance = _llguidance()
    llg_tokenizer = grammar_tokenizer(tokenizer, vocab_size, eos_ids)
    grammar = _grammar_text(llguidance, spec)
    what = "`schema`" if spec.type == "json_schema" else "`regex` (or `choices`)"
    is_error, notes = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, llg_tokenizer)
    if is_error:
        detail = notes[0] if notes else "unknown error"
        raise WorkerError(
            "INVALID_OPTIONS",
            f"The {what} cannot be compiled for constrained decoding: {detail}",
            "Use the JSON Schema constructs llguidance implements (types, properties, required, items, enum, const, "
            "minimum/maximum, minLength/maxLength, pattern, anyOf, $ref); leave out the ones the message names.",
        )
    matcher = llguidance.LLMatcher(llg_tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise WorkerError("INVALID_OPTIONS", f"The {what} cannot be compiled: {matcher.get_error()}")
    return GrammarMask(matcher, vocab_size)


class GrammarMask(LogitsProcessor):
    """One request's matcher and its next-token bitmask.

    `consume` feeds the tokens chosen; `prepare` computes the mask for the state they leave (on the CPU; idempotent,
    so a decoder can call it early); calling it as a logits processor consumes any new tokens of `input_ids`,
    prepares, and sets every token the grammar refuses to -inf.
    """

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.words = (vocab_size + _BITS - 1) // _BITS
        pin = torch.cuda.is_available()
        self.bitmask = torch.full((self.words,), -1, dtype=torch.int32, pin_memory=pin)
        self.prompt_length: int | None = None
        self.consumed = 0
        self._ready = False
        # Time spent computing masks, and how many: what structured output costs per token on the CPU.
        self.mask_seconds = 0.0
        self.masks = 0

    def consume(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            if self.matcher.is_stopped():
                break
            if not self.matcher.consume_token(int(token)):
                raise WorkerError(
                    "GENERATION_FAILED", f"The grammar refused token {int(token)}: {self.matcher.get_error()}"
                )
            self.consumed += 1
            self._ready = False

    def follow(self, answer_ids: Sequence[int]) -> None:
        """Consumes the answer's tokens not consumed yet (after generate(), its last one)."""
        self.consume(answer_ids[self.consumed :])

    def prepare(self) -> None:
        if self._ready:
            return
        started = time.perf_counter()
        self.matcher.unsafe_compute_mask_ptr(self.bitmask.data_ptr(), self.words * 4)
        self.mask_seconds += time.perf_counter() - started
        self.masks += 1
        if self.matcher.is_error():
            raise WorkerError("GENERATION_FAILED", f"The grammar failed: {self.matcher.get_error()}")
        self._ready = True

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` [rows, vocab] with every token the grammar refuses at -inf (each row the same mask)."""
        self.prepare()
        allowed = allowed_tokens(self.bitmask.to(scores.device, non_blocking=True), scores.shape[-1])
        return scores.masked_fill(~allowed, float("-inf"))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:  # type: ignore[override]
        if self.prompt_length is None:
            self.prompt_length = int(input_ids.shape[-1])
        start = self.prompt_length + self.consumed
        if int(input_ids.shape[-1]) > start:
            self.consume([int(i) for i in input_ids[0, start:].tolist()])
        return self.apply(scores)  # type: ignore[return-value]

    def complete(self) -> bool:
        """Whether the answer so far is a whole sentence of the grammar (EOS would be allowed, or was taken)."""
        return bool(self.matcher.is_stopped() or self.matcher.is_accepting())


_SHIFTS: dict[torch.device, torch.Tensor] = {}


def allowed_tokens(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """A bool [vocab] from a packed int32 bitmask (bit i of word w is token 32w + i); tokens past it are refused."""
    shifts = _SHIFTS.get(bitmask.device)
    if shifts is None:
        shifts = _SHIFTS.setdefault(bitmask.device, torch.arange(_BITS, dtype=torch.int32, device=bitmask.device))
    bits = ((bitmask.unsqueeze(-1) >> shifts) & 1).reshape(-1).bool()
    if bits.shape[0] >= vocab:
        return bits[:vocab]
    return torch.cat([bits, torch.zeros(vocab - bits.shape[0], dtype=torch.bool, device=bits.device)])


def structured_finish(reason: FinishReason, grammar: GrammarMask | None) -> FinishReason:
    """`incomplete_structure` for a structured answer that ended before its grammar was complete."""
    if grammar is None or reason == "stop_string" or grammar.complete():
        return reason
    return "incomplete_structure"


def request_grammar(loaded: LoadedModel, params: GenerateParams) -> GrammarMask | None:
    """The request's compiled grammar, or None for free text; checked before any work on the request starts."""
    if params.grammar is None:
        return None
    if int(params.generate_kwargs.get("num_beams") or 1) > 1:
        raise WorkerError(
            "INVALID_OPTIONS",
            "Structured output (schema, choices, regex) cannot be combined with numBeams > 1",
            "Leave numBeams out (or 1) for a structured answer.",
        )
    vocab = int(loaded.model.get_output_embeddings().weight.shape[0])
    return compile_grammar(params.grammar, loaded.processor.tokenizer, vocab, loaded.eos_ids)
