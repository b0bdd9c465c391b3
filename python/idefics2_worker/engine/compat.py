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
