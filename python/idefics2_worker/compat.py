"""Narrow workarounds for the pinned transformers, each applied only where it is needed."""

from __future__ import annotations


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
