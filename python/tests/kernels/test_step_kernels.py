"""The worker's 4-bit and decode-step Triton kernels compute what the code they replace computes.

They run in Triton's CPU interpreter (TRITON_INTERPRET=1 must be set before Triton is imported, hence the
subprocesses). On a GPU machine `python tests/kernels/kernel_cases.py --device cuda` runs the same cases natively, and
the benchmark's parity check judges the whole fused step on the 8B-shaped model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def interpreted(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(TESTS.parent))
    command = [sys.executable, *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=TESTS, timeout=timeout)


@pytest.mark.timeout(300)
def test_kernels_match_the_code_they_replace_within_a_rounding_step() -> None:
    done = interpreted(str(TESTS / "kernels" / "kernel_cases.py"), timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 2 * 9 + 4 + 2 * 10 + 2 + 4 + 2 + 2 + 4 + 4 + 1 + 2 * 6
    for case, difference in results.items():
        # float32 results: the order of float32 sums and the last bits of exp / rsqrt differ (a few steps of
        # 2^-23). bfloat16: one step, plus the interpreter's truncating float32 → bfloat16 conversions (the GPU
        # rounds to nearest, as torch does): the add + norm chain rounds three times (sum, normed, weight product).
        limit = 0.0 if "same bits" in case else 8.0 if "float32" in case else 3.0
        assert difference <= limit, (case, difference)


FUSED_STEP = """
import json, sys, threading, torch
sys.path.insert(0, ".")
from conftest import load_params
from demo_inputs import demo_images, demo_messages
from idefics2_worker.decode.graphs import DecodeGraphs
from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.params import parse_load
from idefics2_worker.decode.teacher_forcing import fast_path_logits

mode = sys.argv[1]
engine = Engine()
engine.load(parse_load(load_params(mode)), threading.Event(), lambda *_: None)
model, processor = engine.loaded.model, engine.loaded.processor
prompt = processor.apply_chat_template(demo_messages(), add_generation_prompt=True)
inputs = processor(text=prompt, images=demo_images(), return_tensors="pt")
generated = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
tokens = generated[0, inputs["input_ids"].shape[1]:].tolist()
modules = fast_path_logits(model, inputs, tokens, use_graphs=False, kernels=False)
from idefics2_worker.kernels import step_kernels
quantizing_norms = []
plain_add_rms_norm_quantized = step_kernels.add_rms_norm_quantized
def counted(*args):
    quantizing_norms.append(args[-1])
    return plain_add_rms_norm_quantized(*args)
step_kernels.add_rms_norm_quantized = counted
fused = fast_path_logits(model, inputs, tokens, use_graphs=False, kernels=True)
quantized_by_norms = len(quantizing_norms)
# Three copies in three rows: the kernels' several-row forms (the 4-bit kernel's rows, the int8 MMA).
rows = fast_path_logits(model, inputs, tokens, use_graphs=False, kernels=True, copies=3)
graphs = DecodeGraphs(model, 1, use_graphs=False, kernels=True)
print(json.dumps({
    "fused": graphs.fused,
    "four_bit_kernels": len(graphs.linears.four_bit),
    "eight_bit_layers": len(graphs.linears.eight_bit),
    "fused_projections": sum(p is not None for p in [*graphs.step._qkv, *graphs.step._gate_up]),
    "quantizing_norms": quantized_by_norms,
    "max_abs": (modules - fused).abs().max().item(),
    "same_top1": torch.equal(modules.argmax(-1), fused.argmax(-1)),
    "max_abs_rows": (modules - rows).abs().max().item(),
    "same_top1_rows": torch.equal(modules.argmax(-1), rows.argmax(-1)),
}))
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("mode", "tolerance"), [("none", 1e-4), ("4bit", 1e-4), ("8bit", 0.1)])
def test_the_fused_step_computes_the_module_step(mode: str, tolerance: float) -> None:
    # The whole decode step with every kernel on (fused norms, rotary + cache write, SiLU, the 4-bit and 8-bit
    # kernels), teacher-forced on generate()'s tokens, against the step made of the model's own modules; at one row,
    # and with the sequence in 3 rows (the kernels' several-row forms).
    # 8-bit: the int8 kernel rounds through float16 where bitsandbytes' int8 ops path on CPU does not.
    done = interpreted("-c", FUSED_STEP, mode, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["fused"]
    # The tiny model's 4-bit layers whose width is a multiple of the 64-weight block (its down projections)
    # take the kernel; the others keep bitsandbytes' forward.
    assert result["four_bit_kernels"] == (3 if mode == "4bit" else 0)
    assert result["eight_bit_layers"] == (21 if mode == "8bit" else 0)
    # q/k/v and gate/up as one product each in the 3 bf16 or 8-bit layers; the tiny model's 4-bit ones do not take
    # the kernel (test_fused_projections.py fuses 4-bit layers that do).
    assert result["fused_projections"] == (0 if mode == "4bit" else 6)
    # 8-bit: each of those groups' norms also quantises their input (6 per step, over the 7 teacher-forced steps).
    assert result["quantizing_norms"] == (6 * 7 if mode == "8bit" else 0)
    assert result["max_abs"] < tolerance, result
    assert result["same_top1"]
    assert result["max_abs_rows"] < tolerance, result
    assert result["same_top1_rows"]


@pytest.mark.parametrize(("capability", "runs"), [((9, 0), True), ((8, 0), True), ((7, 5), False), ((7, 0), False)])
def test_the_kernels_run_on_ampere_or_newer_only(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], runs: bool
) -> None:
    # Before Ampere there are no bfloat16 conversions for Triton to emit: the step keeps torch's kernels there.
    import torch

    from idefics2_worker.kernels import triton_support

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    triton_support.capable.cache_clear()  # the capability is read once per device; each case fakes another
    try:
        assert triton_support.available(torch.device("cuda")) is runs
        assert triton_support.available(torch.device("cpu")) is False
    finally:
        triton_support.capable.cache_clear()
