"""Loading the processor and model the way the reference program does, after checks that give clear errors."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from ..protocol.errors import WorkerError
from ..protocol.params import LoadParams
from ..protocol.progress import OnProgress
from ..request.loaded_model import LoadedModel
from .compat import (
    expose_pil_image_processor,
    int8_quantized_where_loaded,
    portable_cpu_four_bit,
    quiet_int8_cast_notice,
)
from .load_progress import progress_tqdm, reporting_weight_loading
from .quantization import quantization_config

if TYPE_CHECKING:
    import torch

END_OF_UTTERANCE = "<end_of_utterance>"


def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or os.path.isabs(model)


def _cuda_index(device_map: str) -> int | None:
    """The device index a deviceMap names ('cuda' is cuda:0); None for 'auto' and 'cpu'."""
    if device_map == "cuda":
        return 0
    return int(device_map[5:]) if device_map.startswith("cuda:") else None


def decode_device(device_map: str) -> torch.device | None:
    """The CUDA device a model loaded with `device_map` decodes on, where there is one: the device it
    names, for 'auto' the current one; None for 'cpu' or without CUDA."""
    import torch

    if not torch.cuda.is_available() or device_map == "cpu":
        return None
    index = _cuda_index(device_map)
    return torch.device("cuda", torch.cuda.current_device() if index is None else index)


def check_load(params: LoadParams) -> None:
    """Refuses a load that cannot work, before anything already loaded is released."""
    import torch

    index = _cuda_index(params.device_map)
    if index is not None and not torch.cuda.is_available():
        raise WorkerError(
            "CUDA_UNAVAILABLE",
            f"deviceMap {params.device_map!r} needs CUDA, but torch {torch.__version__} sees no CUDA device",
            "Use deviceMap 'cpu' or 'auto', or install a CUDA build of torch and check `nvidia-smi`.",
        )
    if index is not None and index >= torch.cuda.device_count():
        raise WorkerError(
            "CUDA_UNAVAILABLE",
            f"deviceMap asks for cuda:{index}, but torch sees {torch.cuda.device_count()} CUDA device(s)",
            "Pick an index below the device count (`idefics2 doctor` lists them), or use deviceMap 'auto'.",
        )
    limited = [device for device, _ in params.max_memory or () if isinstance(device, int)]
    if limited and max(limited) >= torch.cuda.device_count():
        raise WorkerError(
            "CUDA_UNAVAILABLE",
            f"maxMemory names CUDA device {max(limited)}, but torch {torch.__version__} sees "
            f"{torch.cuda.device_count()} CUDA device(s)",
            "Key maxMemory by indexes below the device count (`idefics2 doctor` lists them), or by 'cpu' alone.",
        )
    if _looks_local(params.model) and not os.path.isdir(os.path.expanduser(params.model)):
        raise WorkerError(
            "MODEL_NOT_FOUND",
            f"No model folder at {params.model}",
            "Pass a folder saved with save_pretrained (config.json, *.safetensors, processor files) or a hub id.",
        )


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    configured = model.generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    utterance_end = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    if isinstance(utterance_end, int) and utterance_end != tokenizer.unk_token_id:
        ids.append(utterance_end)
    return tuple(dict.fromkeys(int(i) for i in ids))


def _set_longest_edge(image_processor: Any, longest_edge: int) -> None:
    from transformers.image_utils import SizeDict

    shortest = image_processor.size["shortest_edge"]
    shortest = min(shortest, longest_edge) if shortest is not None else None
    image_processor.size = SizeDict(shortest_edge=shortest, longest_edge=longest_edge)


def load_model(params: LoadParams, cancel: threading.Event, on_progress: OnProgress) -> LoadedModel:
    """AutoProcessor and AutoModelForImageTextToText from_pretrained, with the reference's arguments."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    expose_pil_image_processor()
    quiet_int8_cast_notice()
    if params.quantization.mode == "8bit":
        int8_quantized_where_loaded()
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
    index = _cuda_index(params.device_map)
    if index is not None:
        # The model thread loads and generates: with its current device the model's, CUDA graphs, Triton launches and
        # memory counts land on that device, not on cuda:0 (one worker per GPU, `devices`).
        torch.cuda.set_device(index)
    model_kwargs = dict(common)
    model_kwargs["device_map"] = params.device_map
    max_memory = params.max_memory_kwarg()
    if max_memory is not None:
        model_kwargs["max_memory"] = max_memory
    quant = quantization_config(params.quantization)
    if quant is not None:
        model_kwargs["quantization_config"] = quant
    if params.dtype != "auto":
        model_kwargs["dtype"] = getattr(torch, params.dtype)
    if params.attn_implementation is not None:
        model_kwargs["attn_implementation"] = params.attn_implementation
    # The hub's download of the weights reports bytes (stage `download`); transformers' "Loading weights" bar
    # reports the tensors placed (stage `model`, items). Neither bar draws anything.
    model_kwargs["tqdm_class"] = progress_tqdm(on_progress, "download", f"Downloading {params.model}", unit="B")
    with reporting_weight_loading(on_progress, "model", f"Loading the weights of {params.model}"):
        model = AutoModelForImageTextToText.from_pretrained(params.model, use_safetensors=True, **model_kwargs)
    portable_cpu_four_bit(model)
    if cancel.is_set():
        raise WorkerError("ABORTED", "The load was cancelled; no model is loaded")
    return LoadedModel(model, processor, _eos_ids(model, processor.tokenizer))
