"""Results in their wire form: the field names and arithmetic the SDK's zod schemas read."""

from __future__ import annotations

from idefics2_worker.protocol.params import Quantization
from idefics2_worker.protocol.results import GenerationResult, MemoryUse, ModelSummary, Timings, Usage


def test_a_generation_result_is_camel_case_with_totals_and_rates_derived() -> None:
    timings = Timings(started=10.0, preprocessed=10.25, first_token=10.5, finished=11.5, tokens=11)
    result = GenerationResult(
        "hi", [5, 6], "stop", Usage(prompt_tokens=7, image_tokens=3, completion_tokens=2), timings
    )
    assert result.to_wire() == {
        "text": "hi",
        "tokenIds": [5, 6],
        "finishReason": "stop",
        "usage": {"promptTokens": 7, "imageTokens": 3, "completionTokens": 2, "totalTokens": 9},
        "timings": {
            "preprocessMs": 250.0,
            "prefillMs": 250.0,
            "decodeMs": 1000.0,
            "totalMs": 1500.0,
            "decodeTokensPerSecond": 10.0,
        },
    }


def test_one_token_has_no_decode_rate() -> None:
    assert Timings(0.0, 0.0, 1.0, 1.0, tokens=1).to_wire()["decodeTokensPerSecond"] == 0.0


def test_a_model_summary_carries_its_quantization_and_the_memory_it_is_given() -> None:
    summary = ModelSummary(
        model="m",
        device="cpu",
        dtype="float32",
        quantization=Quantization(mode="4bit", quant_type="nf4"),
        load_seconds=1.5,
        parameters=10,
        image_seq_len=2,
        do_image_splitting=True,
        longest_edge=980,
        max_context=4096,
        image_token_id=32001,
        eos_token_ids=[2, 32002],
        decoder="fast",
        max_batch_size=8,
    )
    wire = summary.to_wire(MemoryUse(footprint_bytes=100, cuda_allocated_bytes=None, kv_cache_bytes=64))
    assert wire["quantization"] == "4bit"
    assert wire["quantizationConfig"]["quantType"] == "nf4"
    assert wire["loadMs"] == 1500.0
    assert wire["memory"] == {"footprintBytes": 100, "kvCacheBytes": 64}
    on_gpu = MemoryUse(footprint_bytes=100, cuda_allocated_bytes=7, kv_cache_bytes=0).to_wire()
    assert on_gpu["cudaAllocatedBytes"] == 7
