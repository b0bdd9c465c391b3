"""The model: load it the way the reference program does, and generate with streaming and cancel."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import WorkerError
from .params import GenerateParams, LoadParams, Quantization

if TYPE_CHECKING:
    from .batch_decoder import BatchDecoder
    from .streaming import OnToken

OnProgress = Callable[[str, str], None]
END_OF_UTTERANCE = "<end_of_utterance>"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or os.path.isabs(model)


def _wants_cuda(device_map: str | dict[str, Any] | None) -> bool:
    targets = device_map.values() if isinstance(device_map, dict) else [device_map]
    for target in targets:
        if isinstance(target, int) and not isinstance(target, bool):
            return True
        if isinstance(target, str) and target.startswith("cuda"):
            return True
    return False


def quantization_config(quant: Quantization) -> Any:
    """BitsAndBytesConfig with only the kwargs that differ from its defaults, so defaults equal the reference's."""
    if quant.mode == "none":
        return None
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = {}
    if quant.mode == "8bit":
        kwargs["load_in_8bit"] = True
        if quant.int8_threshold is not None and quant.int8_threshold != 6.0:
            kwargs["llm_int8_threshold"] = quant.int8_threshold
    else:
        kwargs["load_in_4bit"] = True
        if quant.quant_type is not None and quant.quant_type != "fp4":
            kwargs["bnb_4bit_quant_type"] = quant.quant_type
        if quant.double_quant:
            kwargs["bnb_4bit_use_double_quant"] = True
        if quant.compute_dtype is not None:
            import torch

            kwargs["bnb_4bit_compute_dtype"] = getattr(torch, quant.compute_dtype)
    if quant.skip_modules is not None:
        kwargs["llm_int8_skip_modules"] = list(quant.skip_modules)
    return BitsAndBytesConfig(**kwargs)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    utterance_end = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    if isinstance(utterance_end, int) and utterance_end != tokenizer.unk_token_id:
        ids.append(utterance_end)
    return list(dict.fromkeys(int(i) for i in ids))


def _missing_cuda_index(device_map: str | dict[str, Any] | None, count: int) -> int | None:
    targets = device_map.values() if isinstance(device_map, dict) else [device_map]
    for target in targets:
        index = target if isinstance(target, int) and not isinstance(target, bool) else None
        if isinstance(target, str) and target.startswith("cuda:") and target[5:].isdigit():
            index = int(target[5:])
        if index is not None and index >= count:
            return index
    return None


class Engine:
    """Holds one processor and model; `load` replaces them, `generate` runs one request."""

    def __init__(self) -> None:
        self.model: Any = None
        self.processor: Any = None
        self.summary: dict[str, Any] | None = None
        self.eos_ids: list[int] = []
        self.batch: BatchDecoder | None = None

    def unload(self) -> None:
        self.model = self.processor = self.summary = self.batch = None
        self.eos_ids = []
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def load(self, params: LoadParams, cancel: threading.Event, on_progress: OnProgress) -> dict[str, Any]:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from .compat import expose_pil_image_processor, quiet_int8_cast_notice

        expose_pil_image_processor()
        quiet_int8_cast_notice()
        started = time.perf_counter()
        if _wants_cuda(params.device_map) and not torch.cuda.is_available():
            raise WorkerError(
                "CUDA_UNAVAILABLE",
                f"deviceMap {params.device_map!r} needs CUDA, but torch {torch.__version__} sees no CUDA device",
                "Use deviceMap 'cpu' or 'auto', or install a CUDA build of torch and check `nvidia-smi`.",
            )
        missing = _missing_cuda_index(params.device_map, torch.cuda.device_count())
        if missing is not None:
            raise WorkerError(
                "CUDA_UNAVAILABLE",
                f"deviceMap asks for cuda:{missing}, but torch sees {torch.cuda.device_count()} CUDA device(s)",
                "Pick an index below the device count (`idefics2 doctor` lists them), or use deviceMap 'auto'.",
            )
        if _looks_local(params.model) and not os.path.isdir(os.path.expanduser(params.model)):
            raise WorkerError(
                "MODEL_NOT_FOUND",
                f"No model folder at {params.model}",
                "Pass a folder saved with save_pretrained (config.json, *.safetensors, processor files) or a hub id.",
            )
        # Checked above before anything is released; loading two models at once could exhaust memory.
        if self.model is not None:
            on_progress("unload", "Releasing the previously loaded model")
            self.unload()
        common: dict[str, Any] = {}
        if params.revision is not None:
            common["revision"] = params.revision
        if params.trust_remote_code:
            common["trust_remote_code"] = True
        if params.local_files_only:
            common["local_files_only"] = True

        on_progress("processor", f"Loading the processor of {params.model}")
        processor_kwargs = dict(common)
        if params.do_image_splitting is not None:
            processor_kwargs["do_image_splitting"] = params.do_image_splitting
        processor = AutoProcessor.from_pretrained(params.model, **processor_kwargs)
        if params.longest_edge is not None:
            _set_longest_edge(processor.image_processor, params.longest_edge)

        on_progress("model", f"Loading the model {params.model}")
        model_kwargs = dict(common)
        if params.device_map is not None:
            model_kwargs["device_map"] = params.device_map
        quant = quantization_config(params.quantization)
        if quant is not None:
            model_kwargs["quantization_config"] = quant
        if params.dtype != "auto":
            model_kwargs["dtype"] = getattr(torch, params.dtype)
        if params.attn_implementation is not None:
            model_kwargs["attn_implementation"] = params.attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(params.model, use_safetensors=True, **model_kwargs)
        if cancel.is_set():
            raise WorkerError("ABORTED", "The load was cancelled; no model is loaded")

        self.model, self.processor = model, processor
        self.eos_ids = _eos_ids(model, processor.tokenizer)
        self._start_batch_decoder(params)
        self.summary = self._summary(params, time.perf_counter() - started)
        return self.summary

    def _start_batch_decoder(self, params: LoadParams) -> None:
        try:
            self.batch = self._batch_decoder(params)
        except WorkerError:
            self.unload()
            raise

    def _batch_decoder(self, params: LoadParams) -> BatchDecoder | None:
        """The fast decoder when asked for, or by default on a model that sits on one CUDA device."""
        from .batch_decoder import BatchDecoder

        devices = sorted({str(p.device) for p in self.model.parameters()})
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
        return BatchDecoder(self, params.max_batch_size, vision_chunk=1, use_graphs=True)

    def _summary(self, params: LoadParams, seconds: float) -> dict[str, Any]:
        import torch

        model, image_processor = self.model, self.processor.image_processor
        memory: dict[str, Any] = {"footprintBytes": int(model.get_memory_footprint())}
        if torch.cuda.is_available():
            memory["cudaAllocatedBytes"] = int(torch.cuda.memory_allocated())
        return {
            "model": params.model,
            "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "quantization": params.quantization.mode,
            "quantizationConfig": params.quantization.to_wire(),
            "loadMs": _ms(seconds),
            "parameters": int(model.num_parameters()),
            "imageSeqLen": int(self.processor.image_seq_len),
            "doImageSplitting": bool(image_processor.do_image_splitting),
            "longestEdge": int(image_processor.size["longest_edge"]),
            "maxContext": int(model.config.text_config.max_position_embeddings),
            "imageTokenId": int(model.config.image_token_id),
            "eosTokenIds": list(self.eos_ids),
            "decoder": "fast" if self.batch is not None else "reference",
            "maxBatchSize": params.max_batch_size if self.batch is not None else 1,
            "memory": memory,
        }

    def generate(
        self, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event
    ) -> dict[str, Any]:
        if self.model is None:
            raise WorkerError("GENERATION_FAILED", "No model is loaded", "Send `load` before `generate`.")
        from .generation import run_generation

        return run_generation(self, params, payload, on_token, cancel)


def _set_longest_edge(image_processor: Any, longest_edge: int) -> None:
    from transformers.image_utils import SizeDict

    shortest = image_processor.size["shortest_edge"]
    shortest = min(shortest, longest_edge) if shortest is not None else None
    image_processor.size = SizeDict(shortest_edge=shortest, longest_edge=longest_edge)
