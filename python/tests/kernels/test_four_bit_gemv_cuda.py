"""The 4-bit CUDA kernel's source compiles with NVRTC (the real compiler, here without a GPU), its compiled form is
kept on disk, and on CPU tensors the worker keeps the Triton kernel.

The kernel itself runs only on a GPU: `python tests/kernels/kernel_cases.py --device cuda` checks it against
bitsandbytes, and `batch_invariant_cases.py --device cuda` checks that a row's bits do not depend on its batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from idefics2_worker.kernels import four_bit_gemv_cuda, nvrtc
from idefics2_worker.kernels.four_bit_gemv_cuda import Tiling


def test_the_worker_compiles_every_row_count_at_every_size() -> None:
    instances = four_bit_gemv_cuda.chosen_instances()
    assert {rows for rows, _ in instances} == set(range(1, 9))
    for rows in range(1, 9):
        for n, k in ((4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336), (1000, 512)):
            tiling = four_bit_gemv_cuda.tiling_for(n, k, rows)
            assert any(tiling.kernel(rows) == t.kernel(r) for r, t in instances)
            # Deterministic decoding: a layer's sums are ordered alike at every row count.
            assert tiling.splits == four_bit_gemv_cuda.tiling_for(n, k, 1).splits
            assert tiling.warps % tiling.splits == 0
            assert tiling.warps <= four_bit_gemv_cuda.MAX_WARPS


def test_the_source_declares_one_kernel_per_rows_and_outputs() -> None:
    text = four_bit_gemv_cuda.source([(1, Tiling(4, 1, 2)), (1, Tiling(4, 2, 8)), (8, Tiling(2, 1, 4))])
    assert text.count("\nFOUR_BIT_GEMV(") == 2  # splits and warps are launch settings, not kernels
    assert "FOUR_BIT_GEMV(1, 4)" in text
    assert "FOUR_BIT_GEMV(8, 2)" in text


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(four_bit_gemv_cuda.INPUT_KINDS.values()))
def test_nvrtc_compiles_the_kernels_for_ampere_and_hopper(kind: int) -> None:
    instances = four_bit_gemv_cuda.chosen_instances()
    text = four_bit_gemv_cuda.source(instances)
    for architecture in ("sm_80", "sm_90"):
        cubin = nvrtc.compile_cubin(text, architecture, [f"-DINPUT_KIND={kind}", "--std=c++17"])
        assert cubin.startswith(b"\x7fELF")
        for rows, tiling in instances:
            assert tiling.kernel(rows).encode() in cubin


def test_a_source_that_does_not_compile_says_why() -> None:
    with pytest.raises(nvrtc.NvrtcError, match="undefined_name"):
        nvrtc.compile_cubin('extern "C" __global__ void k() { undefined_name(); }', "sm_90", [])


def test_the_cubin_is_compiled_once_then_read_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    source = 'extern "C" __global__ void copy(float* out, const float* in) { out[threadIdx.x] = in[threadIdx.x]; }'
    first = nvrtc.cached_cubin(source, "sm_90", [])
    kept = list(tmp_path.rglob("*.cubin"))
    assert len(kept) == 1
    assert kept[0].read_bytes() == first
    kept[0].write_bytes(b"what the cache holds")
    assert nvrtc.cached_cubin(source, "sm_90", []) == b"what the cache holds"
    # Another architecture or option is another entry.
    assert nvrtc.cached_cubin(source, "sm_80", []) != b"what the cache holds"
    assert len(list(tmp_path.rglob("*.cubin"))) == 2


def test_cpu_tensors_keep_the_triton_kernel() -> None:
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(128, 8, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(
        torch.randn(8, 128).to(torch.bfloat16), requires_grad=False, quant_type="nf4", compress_statistics=False
    )
    state = layer.to("cpu").weight.quant_state  # quantised where it is placed
    x = torch.randn(2, 128, dtype=torch.bfloat16)
    packed = layer.weight.data.view(-1)
    assert four_bit_gemv_cuda.kernels(torch.bfloat16, torch.device("cpu")) is None
    assert not four_bit_gemv_cuda.usable(x, packed, state.absmax, (8, 128), state.blocksize)
