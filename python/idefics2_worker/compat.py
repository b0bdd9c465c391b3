"""Narrow workarounds for the pinned transformers, each applied only where it is needed."""

from __future__ import annotations

import logging


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
