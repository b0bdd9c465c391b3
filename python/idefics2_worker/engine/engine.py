"""The model behind the server: `load` replaces it, `generate` runs one request, `batch` is the fast decoder."""

from __future__ import annotations

import gc
import threading
import time
from typing import TYPE_CHECKING, Any

from ..protocol.errors import WorkerError
from ..protocol.params import GenerateParams, LoadParams
from ..protocol.progress import OnProgress
from ..protocol.results import GenerationResult, MemoryUse, ModelSummary
from ..request.loaded_model import LoadedModel
from .loading import check_load, decode_device, load_model

if TYPE_CHECKING:
    from ..decode.batch_decoder import BatchDecoder
    from ..request.streaming import OnToken


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Engine:
    """Holds one loaded model and, on a GPU (or when asked for), its fast decoder."""

    def __init__(self) -> None:
        self.loaded: LoadedModel | None = None
        self.summary: ModelSummary | None = None
        self.batch: BatchDecoder | None = None

    def unload(self) -> None:
        self.loaded = self.summary = self.batch = None
        gc.collect()
        _empty_cuda_cache()

    def load(self, params: LoadParams, cancel: threading.Event, on_progress: OnProgress) -> dict[str, Any]:
        started = time.perf_counter()
        check_load(params)
        # Checked before anything is released; loading two models at once could exhaust memory.
        if self.loaded is not None:
            on_progress("unload", "Releasing the previously loaded model")
            self.unload()
        _compile_decode_kernels_early(params)
        loaded = load_model(params, cancel, on_progress)
        self.loaded = loaded
        try:
            self.batch = choose_batch_decoder(loaded, params, on_progress)
        except WorkerError:
            self.unload()
            raise
        self.summary = _summary(loaded, params, self.batch is not None, time.perf_counter() - started)
        return self.summary.to_wire(self.memory())

    def generate(
        self, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event
    ) -> GenerationResult:
        if self.loaded is None:
            raise WorkerError("GENERATION_FAILED", "No model is loaded", "Send `load` before `generate`.")
        from .reference_generate import run_generation

        return run_generation(self.loaded, params, payload, on_token, cancel)

    def release_memory(self) -> dict[str, Any]:
        """Gives back the fast decoder's KV cache and graphs (the server calls this only while nothing decodes)."""
        before = self.memory()
        if self.batch is not None:
            self.batch.release()
        gc.collect()
        _empty_cuda_cache()
        after = self.memory()
        return {"freedKvCacheBytes": before.kv_cache_bytes - after.kv_cache_bytes, "memory": after.to_wire()}

    def memory(self) -> MemoryUse:
        import torch

        model = self.loaded.model if self.loaded is not None else None
        return MemoryUse(
            footprint_bytes=int(model.get_memory_footprint()) if model is not None else 0,
            cuda_allocated_bytes=int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None,
            kv_cache_bytes=self.batch.cache_bytes() if self.batch is not None else 0,
        )

    def describe(self) -> dict[str, Any] | None:
        """The loaded model's summary with its memory as it is now, for `info`."""
        return None if self.summary is None else self.summary.to_wire(self.memory())


def _compile_decode_kernels_early(params: LoadParams) -> None:
    """A 4-bit load computing in float32 (the fast decoder's CUDA kernels then run) starts their compile now, beside
    the weights' load: a first load on a machine would otherwise wait ~2.4 s for it after (H39)."""
    quantization = params.quantization
    if (
        quantization.mode != "4bit"
        or quantization.compute_dtype not in {None, "float32"}
        or params.decoder == "reference"
    ):
        return
    device = decode_device(params.device_map)
    if device is not None:
        from ..decode.linears import compile_four_bit_kernels_early

        compile_four_bit_kernels_early(device)


def choose_batch_decoder(
    loaded: LoadedModel, params: LoadParams, on_progress: OnProgress | None = None
) -> BatchDecoder | None:
    """The fast decoder when asked for, or by default on a model that sits on one CUDA device (and, deterministic, where
    its batch-invariant kernels run)."""
    devices = sorted({str(p.device) for p in loaded.model.parameters()})
    single = len(devices) == 1
    on_cuda = single and devices[0].startswith("cuda")
    if params.decoder == "reference" or (params.decoder == "auto" and not on_cuda):
        return None
    if not single:
        raise WorkerError(
            "INVALID_OPTIONS",
            f"decoder 'fast' needs the model on one device, but deviceMap spread it over {devices}",
            "Use decoder 'reference' (or 'auto') with a model split over devices, or a deviceMap of one device.",
        )
    # Imported only where a fast decoder may be made: 0.08 s on this project's CPU machine, 0.14 s on an H200's (H68).
    from ..decode.batch_decoder import BatchDecoder, invariant_kernels_run
    from ..decode.prefill import PrefillPlan

    if params.deterministic and params.decoder == "auto" and not invariant_kernels_run(loaded.model):
        return None  # deterministic without the invariant kernels: generate(), one request at a time
    if on_progress is not None:  # a step of its own in the load's timeline (fused weights, KV slots, kernels)
        on_progress("model", "Preparing the fast decoder")
    plan = PrefillPlan.fastest(loaded.model)
    return BatchDecoder(loaded, params.max_batch_size, plan, use_graphs=True, deterministic=params.deterministic)


def _summary(loaded: LoadedModel, params: LoadParams, fast: bool, seconds: float) -> ModelSummary:
    model, processor = loaded.model, loaded.processor
    image_processor = processor.image_processor
    return ModelSummary(
        model=params.model,
        device=str(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
        quantization=params.quantization,
        load_seconds=seconds,
        parameters=int(model.num_parameters()),
        image_seq_len=int(processor.image_seq_len),
        do_image_splitting=bool(image_processor.do_image_splitting),
        longest_edge=int(image_processor.size["longest_edge"]),
        max_context=int(model.config.text_config.max_position_embeddings),
        image_token_id=int(model.config.image_token_id),
        eos_token_ids=list(loaded.eos_ids),
        decoder="fast" if fast else "reference",
        max_batch_size=params.max_batch_size if fast else 1,
    )
