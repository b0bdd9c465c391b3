"""Results the worker sends, as domain values with their wire form (camelCase JSON, docs/PROTOCOL.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .params import Quantization

# `incomplete_structure`: a structured answer cut off by max_new_tokens before its grammar was complete.
FinishReason = Literal["stop", "stop_string", "length", "incomplete_structure"]


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    image_tokens: int
    completion_tokens: int

    def to_wire(self) -> dict[str, int]:
        return {
            "promptTokens": self.prompt_tokens,
            "imageTokens": self.image_tokens,
            "completionTokens": self.completion_tokens,
            "totalTokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True)
class Timings:
    """Seconds from `perf_counter`: the request's start, the end of preprocessing, the first new token, the end."""

    started: float
    preprocessed: float
    first_token: float
    finished: float
    tokens: int

    def to_wire(self) -> dict[str, float]:
        decode = self.finished - self.first_token
        return {
            "preprocessMs": milliseconds(self.preprocessed - self.started),
            "prefillMs": milliseconds(self.first_token - self.preprocessed),
            "decodeMs": milliseconds(decode),
            "totalMs": milliseconds(self.finished - self.started),
            # The first token comes from the prefill; the decode rate counts the tokens after it.
            "decodeTokensPerSecond": round((self.tokens - 1) / decode, 3) if self.tokens > 1 and decode > 0 else 0.0,
        }


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    timings: Timings

    def to_wire(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokenIds": list(self.token_ids),
            "finishReason": self.finish_reason,
            "usage": self.usage.to_wire(),
            "timings": self.timings.to_wire(),
        }


@dataclass(frozen=True)
class MemoryUse:
    """Bytes held now: the weights, everything torch has allocated on the GPU, and the fast decoder's KV cache."""

    footprint_bytes: int
    cuda_allocated_bytes: int | None
    kv_cache_bytes: int

    def to_wire(self) -> dict[str, int]:
        body = {"footprintBytes": self.footprint_bytes, "kvCacheBytes": self.kv_cache_bytes}
        if self.cuda_allocated_bytes is not None:
            body["cudaAllocatedBytes"] = self.cuda_allocated_bytes
        return body


@dataclass(frozen=True)
class ModelSummary:
    """What `load` answers and `info` repeats: the loaded model, its settings and its memory."""

    model: str
    device: str
    dtype: str
    quantization: Quantization
    load_seconds: float
    parameters: int
    image_seq_len: int
    do_image_splitting: bool
    longest_edge: int
    max_context: int
    image_token_id: int
    eos_token_ids: list[int]
    decoder: Literal["fast", "reference"]
    max_batch_size: int

    def to_wire(self, memory: MemoryUse) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "quantization": self.quantization.mode,
            "quantizationConfig": self.quantization.to_wire(),
            "loadMs": milliseconds(self.load_seconds),
            "parameters": self.parameters,
            "imageSeqLen": self.image_seq_len,
            "doImageSplitting": self.do_image_splitting,
            "longestEdge": self.longest_edge,
            "maxContext": self.max_context,
            "imageTokenId": self.image_token_id,
            "eosTokenIds": list(self.eos_token_ids),
            "decoder": self.decoder,
            "maxBatchSize": self.max_batch_size,
            "memory": memory.to_wire(),
        }
