"""bitsandbytes' layer classes, for code that looks for quantized layers in a loaded model."""

from __future__ import annotations

import sys


def bitsandbytes_linears() -> tuple[type, type] | None:
    """(Linear8bitLt, Linear4bit) when bitsandbytes is already imported, else None.

    A model with bitsandbytes layers imported it while loading (transformers' quantizer builds them). Importing it
    only to find none in a model without them would add its import and native library to every such load (0.75 s
    on this project's CPU machine, more where it loads its CUDA library).
    """
    if "bitsandbytes" not in sys.modules:
        return None
    try:
        from bitsandbytes.nn.modules import Linear4bit, Linear8bitLt
    except Exception:  # any import failure means there are no quantized layers to find
        return None
    return Linear8bitLt, Linear4bit
