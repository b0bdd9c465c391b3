"""The GPU benchmark's quantizations as from_pretrained kwargs, for bench_reference.py and gpu_parity.py.

bf16 weights; LLM.int8() (`BitsAndBytesConfig(load_in_8bit=True)`); 4-bit nf4 (`load_in_4bit=True,
bnb_4bit_quant_type="nf4"`), which the SDK side of benchmark-gpu.mjs loads as `{ mode: "4bit", quantType: "nf4" }`.
The BitsAndBytesConfig is the worker's own (`quantization_config`), so both sides load the same config. Import it
after putting the repository's python/ folder on sys.path.
"""

from __future__ import annotations

from typing import Any

import torch

from idefics2_worker.engine.quantization import quantization_config
from idefics2_worker.protocol.params import Quantization

QUANTIZATIONS = ("bf16", "8bit", "4bit")


def from_pretrained_kwargs(name: str) -> dict[str, Any]:
    """The load kwargs for one of QUANTIZATIONS, beside device_map="auto"."""
    if name == "bf16":
        return {"dtype": torch.bfloat16}
    quant = Quantization(mode=name, quant_type="nf4" if name == "4bit" else None)
    return {"quantization_config": quantization_config(quant)}
