#!/usr/bin/env python3
"""The fast decoder's packed 4-bit layers on a GPU (decode/packed_four_bit.py): what packing changes and what not.

Loads the model at 4-bit as the reference program does, records for the first and last text layers' q, k, o, gate
and down projections their own forward (bitsandbytes' CUDA kernels, 1 and 5 rows) and the prefill's dequantised
weight (float32 and bfloat16), then builds the decode step, which packs the layers, and checks:
- how many of the text model's 4-bit layers were packed (all of idefics2-8b's: their shapes fit);
- each recorded forward and weight, bit for bit, after the packing;
- the packed kernel at 1 and 8 rows against the unpacked tensor-core kernel at the same splits and unroll (the same
  order of sums, so the same bits), on a fused q/k/v group and a down projection;
- the GPU memory the weights take, before and after (packing replaces bitsandbytes' layout; it adds none).
Prints one JSON object; exits 1 if a check fails.

Usage: python scripts/gpu/check_packed_layers.py --model DIR [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from idefics2_worker.decode import packed_four_bit
from idefics2_worker.decode.prefill_linears import dequantized_weight
from idefics2_worker.decode.step import DecodeStep
from idefics2_worker.kernels import four_bit_cuda
from idefics2_worker.request.quantized_layers import bitsandbytes_linears

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")


def load(model_dir: str) -> Any:
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True)
    return AutoModelForImageTextToText.from_pretrained(model_dir, device_map="auto", quantization_config=config)


def recorded(modules: dict[str, Any], inputs: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    out = {}
    with torch.inference_mode():
        for name, module in modules.items():
            forwards = [module(x) for x in inputs]
            weights = [dequantized_weight(module, dtype) for dtype in (torch.float32, torch.bfloat16)]
            out[name] = [*forwards, *weights]
    return out


def unpacked_operands(module: Any) -> tuple[torch.Tensor, ...]:
    state = module.weight.quant_state
    return module.weight.data.view(-1).clone(), state.absmax.clone()


def packed_kernel_bits(
    groups: dict[str, tuple[list[Any], tuple[torch.Tensor, torch.Tensor]]], dtype: torch.dtype, device: torch.device
) -> dict[str, bool | None]:
    """Per group (its modules, packed together, and their unpacked codes and absmax) and 1 and 8 rows: whether the
    packed kernel gives the unpacked tensor-core kernel's bits at the same splits and unroll (None: not packed)."""
    bits: dict[str, bool | None] = {}
    for label, (modules, (codes, absmax)) in groups.items():
        layer = packed_four_bit.packed_of(modules[0])
        if layer is None:
            bits[label] = None
            continue
        state = modules[0].weight.quant_state
        shape = (sum(int(m.out_features) for m in modules), int(modules[0].in_features))
        tiling = four_bit_cuda.packed_tiling_for(*shape)
        unpacked = four_bit_cuda.MmaTiling(1, tiling.splits, tiling.unroll)
        compiled = four_bit_cuda.kernels(dtype, device, {(1, tiling), (1, unpacked)})
        operands = (state.code, shape, state.blocksize)
        for count in (1, 8):
            x = torch.randn(count, shape[1], device=device, dtype=dtype)
            ours = four_bit_cuda.four_bit_mma_packed_cuda(x, layer.whole, *operands, compiled=compiled)
            theirs = four_bit_cuda.four_bit_mma_cuda(x, codes, absmax, *operands, tiling=unpacked, compiled=compiled)
            bits[f"{label}, {count} rows"] = torch.equal(ours, theirs)
    return bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load(args.model)
    text = model.model.text_model
    _, four_bit = bitsandbytes_linears() or (None, None)
    layers = [m for m in text.modules() if four_bit is not None and isinstance(m, four_bit)]
    picked = {
        f"{index}.{name}": text.layers[index].get_submodule(name)
        for index in (0, len(text.layers) - 1)
        for name in PROJECTIONS
    }
    dtype = next(p.dtype for p in text.parameters() if p.is_floating_point())

    def rows(count: int, width: int) -> torch.Tensor:
        return torch.randn(count, 1, width, device=model.device, dtype=dtype)

    inputs = {name: [rows(1, m.in_features), rows(5, m.in_features)] for name, m in picked.items()}
    before: dict[str, list[torch.Tensor]] = {}
    for name, module in picked.items():
        before |= recorded({name: module}, inputs[name])
    # The unpacked kernel's operands, for the packed kernel's bits: layer 0's q/k/v (joined) and down.
    attn, mlp = text.layers[0].self_attn, text.layers[0].mlp
    qkv = [unpacked_operands(m) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    qkv_operands = (torch.cat([c for c, _ in qkv]), torch.cat([a for _, a in qkv]))
    down_operands = unpacked_operands(mlp.down_proj)
    torch.cuda.synchronize()
    allocated_before = torch.cuda.memory_allocated()
    step = DecodeStep(model, max_batch=8)
    torch.cuda.synchronize()
    allocated_after = torch.cuda.memory_allocated()
    packed = [m for m in layers if packed_four_bit.packed_of(m) is not None]
    after: dict[str, list[torch.Tensor]] = {}
    for name, module in picked.items():
        after |= recorded({name: module}, inputs[name])
    same = {name: [torch.equal(b, a) for b, a in zip(before[name], after[name], strict=True)] for name in before}

    groups = {
        "layer 0 q/k/v": ([attn.q_proj, attn.k_proj, attn.v_proj], qkv_operands),
        "layer 0 down": ([mlp.down_proj], down_operands),
    }
    kernel_bits = packed_kernel_bits(groups, dtype, model.device)
    result = {
        "device": torch.cuda.get_device_name(),
        "four_bit_text_layers": len(layers),
        "packed": len(packed),
        "fused_qkv": sum(p is not None for p in step._qkv),
        "same_bits_after_packing": same,
        "packed_kernel_bits_of_unpacked": kernel_bits,
        "allocated_gb_before": round(allocated_before / 1e9, 3),
        "allocated_gb_after": round(allocated_after / 1e9, 3),
    }
    ok = (
        len(packed) == len(layers)
        and all(all(v) for v in same.values())
        and all(v is True for v in kernel_bits.values())
        and allocated_after <= allocated_before * 1.01
    )
    result["ok"] = ok
    text_out = json.dumps(result, indent=1)
    print(text_out)
    if args.out:
        args.out.write_text(text_out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
