"""Narrow workarounds for the pinned transformers and bitsandbytes, each applied only where it is needed."""

from __future__ import annotations

import logging
from typing import Any

from ..request.quantized_layers import bitsandbytes_linears


def expose_pil_image_processor() -> None:
    """Lets AutoProcessor find Idefics2's PIL image processor when torchvision is absent.

    transformers 5.17 files `Idefics2ImageProcessorPil` under the torchvision requirement, so without
    torchvision its lazy module hands AutoImageProcessor a placeholder and loading fails, although the PIL
    class needs no torchvision. With torchvision installed nothing changes (the reference picks the same class).
    """
    from transformers.utils.import_utils import is_torchvision_available

    if is_torchvision_available():
        return
    import transformers.models.idefics2 as package
    from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

    package.Idefics2ImageProcessorPil = Idefics2ImageProcessorPil  # type: ignore[attr-defined]


class _DropInt8CastNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def quiet_int8_cast_notice() -> None:
    """Drops bitsandbytes' notice that LLM.int8() casts its input to float16.

    bitsandbytes 0.50 logs it at WARNING on every 8-bit matmul that is not compiled: ~225 lines per generated
    token of idefics2-8b, 27,000 lines (2.5 MB of worker stderr) in one benchmark run. The cast is what LLM.int8()
    always does and is documented; the notice says nothing the user can act on. Other bitsandbytes logs pass.
    """
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(existing, _DropInt8CastNotice) for existing in logger.filters):
        logger.addFilter(_DropInt8CastNotice())


def int8_quantized_where_loaded() -> None:
    """Has LLM.int8() weights quantised on the device they were loaded to, not after a trip through host memory.

    transformers 5.17 loads each weight of an 8-bit load onto its GPU, then its `Bnb8bitQuantize` takes it back to
    host memory, where bitsandbytes converts it to float16 and copies it up again to quantise it. For idefics2-8b's
    410 int8 layers on an H200 that made from_pretrained take 21.1 s, against 3.7 s this way (docs/BENCHMARKS.md).
    Here bitsandbytes' own quantisation (`Int8Params._quantize`) runs on the weight where it lies: the same rounding
    to float16 and the same kernel, so the same int8 weights and scales (bit for bit on the device,
    `scripts/gpu/check_int8_load.py`). GPT-2-style Conv1D layers keep transformers' path, and so does a whole load
    under another transformers or bitsandbytes without these hooks (a user's own interpreter).
    """
    try:
        from bitsandbytes.nn.modules import Int8Params
        from transformers.integrations import bitsandbytes as integration
        from transformers.pytorch_utils import Conv1D
        from transformers.quantizers.quantizers_utils import get_module_from_name
    except ImportError:
        return
    operation = getattr(integration, "Bnb8bitQuantize", None)
    if operation is None or not hasattr(Int8Params, "_quantize"):
        return
    stock = operation.convert
    if hasattr(stock, "__wrapped__"):  # already in place
        return

    def convert(self: Any, input_dict: dict[str, Any], model: Any = None, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in input_dict.items():
            weight = value[0] if isinstance(value, list) else value
            module, _ = get_module_from_name(model, name)
            if issubclass(getattr(module, "source_cls", type(None)), Conv1D):
                result.update(stock(self, {name: value}, model=model, **kwargs))
                continue
            placeholder = dict(model.get_parameter_or_buffer(name).__dict__)
            placeholder.pop("SCB", None)
            loaded = Int8Params(weight, requires_grad=False, **placeholder)
            result[name] = loaded._quantize(weight.device)
        return result

    convert.__wrapped__ = stock  # type: ignore[attr-defined]
    operation.convert = convert


def portable_cpu_four_bit(model: Any) -> None:
    """Keeps bitsandbytes' 4-bit layers on its portable CPU path, whatever the CPU.

    On CPUs with AVX512-BF16 (recent AMD EPYC and Intel Xeon), bitsandbytes 0.50.2 repacks each 4-bit weight at its
    first CPU forward for a bfloat16 kernel. The repacking fails for a layer whose input width is not a multiple
    of the quantization block (64): idefics2-8b's vision MLP has 4,304 inputs, and the tiny test model's layers
    too ("shape '[128, 2]' is invalid for input of size 320"). It also rounds the block scales to bfloat16, so
    answers would depend on the CPU. The portable path is the one every other x86 CPU takes; GPU layers never
    read this flag.
    """
    classes = bitsandbytes_linears()
    if classes is None:  # no bitsandbytes layers
        return
    _, four_bit = classes
    for module in model.modules():
        if isinstance(module, four_bit):
            module.support_avx512bf16_for_cpu = False
