"""The 4-bit CUDA kernels' source (tensor cores and CUDA cores) compiles with NVRTC (the real compiler, here without a
GPU), its compiled form is kept on disk, and on CPU tensors the worker keeps the Triton kernel.

The kernels themselves run only on a GPU: `python tests/kernels/kernel_cases.py --device cuda` checks it against
bitsandbytes, and `batch_invariant_cases.py --device cuda` checks that a row's bits do not depend on its batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from idefics2_worker.kernels import four_bit_cuda, four_bit_packing, nvrtc
from idefics2_worker.kernels.four_bit_cuda import MmaTiling, PackedTiling, Tiling

SHAPES = ((4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336), (1000, 512), (16, 64))


def test_the_worker_compiles_every_row_count_at_every_size() -> None:
    instances = four_bit_cuda.chosen_instances()
    assert {rows for rows, _ in instances} == set(range(1, 9))
    for rows in range(1, 9):
        for n, k in SHAPES:
            tiling = four_bit_cuda.tiling_for(n, k, rows)
            assert any(tiling.kernel(rows) == t.kernel(r) for r, t in instances)
            # Deterministic decoding: a layer's sums are ordered alike at every row count.
            assert tiling.splits == four_bit_cuda.tiling_for(n, k, 1).splits
            assert tiling.warps % tiling.splits == 0
            assert tiling.warps <= four_bit_cuda.MAX_WARPS


def test_the_tensor_core_kernel_serves_every_row_count_with_one_order_a_shape() -> None:
    instances = four_bit_cuda.chosen_instances()
    for n, k in SHAPES:
        tiling = four_bit_cuda.mma_tiling_for(n, k)
        # One kernel for 1-8 rows, compiled with the worker's set; its splits (the sums' order) set by the shape.
        assert tiling.kernel(1) == tiling.kernel(8)
        assert tiling.kernel(1) in {t.kernel(1) for _, t in instances if isinstance(t, MmaTiling)}
        assert tiling.warps <= four_bit_cuda.MMA_MAX_WARPS
        assert tiling.runs_on(torch.bfloat16)
        assert tiling.runs_on(torch.float16)
        assert not tiling.runs_on(torch.float32)


def test_the_packed_kernel_serves_every_row_count_with_one_order_a_shape() -> None:
    instances = four_bit_cuda.chosen_instances()
    for n, k in SHAPES:
        tiling = four_bit_cuda.packed_tiling_for(n, k)
        assert tiling.kernel(1) == tiling.kernel(8)
        assert tiling.kernel(1) in {t.kernel(1) for _, t in instances if isinstance(t, PackedTiling)}
        assert tiling.warps <= four_bit_cuda.MMA_MAX_WARPS
        # A block's tiles divide the padded layout's, so no block reads past a layer.
        assert four_bit_packing.PACK_TILES % (tiling.tiles * tiling.groups) == 0
        assert not tiling.runs_on(torch.float32)


def test_a_layer_packed_only_in_part_is_refused_by_the_packed_kernel() -> None:
    layer = four_bit_packing.pack(torch.zeros(32 * 64, dtype=torch.uint8), torch.ones(32), (32, 128), 128)
    x = torch.zeros(1, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="packed whole"):
        four_bit_cuda.four_bit_mma_packed_cuda(x, layer.part(0, 2), torch.zeros(16), (32, 128), 128, compiled={})


def test_one_or_two_rows_take_the_cuda_cores_unless_deterministic() -> None:
    assert [four_bit_cuda.tensor_cores_for(rows, deterministic=False) for rows in range(1, 6)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    # Deterministic: one kernel at every row count, so a row's sums do not depend on the batch.
    assert all(four_bit_cuda.tensor_cores_for(rows, deterministic=True) for rows in range(1, 21))


def test_the_source_declares_one_kernel_per_distinct_instance() -> None:
    text = four_bit_cuda.source(
        [
            (1, Tiling(4, 1, 2)),
            (1, Tiling(4, 2, 8)),
            (8, Tiling(2, 1, 4)),
            (1, MmaTiling(2, 8, 2)),
            (3, MmaTiling(8, 2, 2)),
        ]
    )
    assert text.count("\nFOUR_BIT_GEMV(") == 2  # splits and warps are launch settings, not kernels
    assert "FOUR_BIT_GEMV(1, 4)" in text
    assert "FOUR_BIT_GEMV(8, 2)" in text
    assert text.count("\nFOUR_BIT_MMA(") == 1  # rows, tiles and splits too
    assert "FOUR_BIT_MMA(2)" in text


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(four_bit_cuda.INPUT_KINDS.values()))
def test_nvrtc_compiles_the_kernels_for_ampere_and_hopper(kind: int) -> None:
    instances = four_bit_cuda.chosen_instances()
    text = four_bit_cuda.source(instances)
    for architecture in ("sm_80", "sm_90"):
        cubin = nvrtc.compile_cubin(text, architecture, [f"-DINPUT_KIND={kind}", "--std=c++17"])
        assert cubin.startswith(b"\x7fELF")
        dtype = next(d for d, index in four_bit_cuda.INPUT_KINDS.items() if index == kind)
        names = four_bit_cuda.kernel_names(instances, dtype)
        assert {tiling.kernel(rows) for rows, tiling in instances if tiling.runs_on(dtype)} == set(names)
        for name in names:
            assert name.encode() in cubin
        # The tensor-core kernel takes bf16 and fp16 inputs only; float32 keeps the CUDA-core kernel.
        assert (b"four_bit_mma_" in cubin) == (dtype != torch.float32)


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
    assert four_bit_cuda.kernels(torch.bfloat16, torch.device("cpu")) is None
    assert not four_bit_cuda.usable(x, packed, state.absmax, (8, 128), state.blocksize)
    assert not four_bit_cuda.mma_usable(x, packed, state.absmax, (8, 128), state.blocksize)
    assert not four_bit_cuda.packed_usable(torch.bfloat16, torch.device("cpu"), (16, 128), state.blocksize)


def test_a_compile_started_in_the_background_is_the_one_the_decoder_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a GPU the compile and the device are stand-ins; what is tested is the hand-over: the decoder's call waits
    # for the compile under way and gets its result, and nothing compiles twice.
    import functools
    import threading
    import time

    started, compiled = threading.Event(), []

    def slow_compile(dtype: torch.dtype, index: int, instances: frozenset) -> dict:
        started.set()
        time.sleep(0.3)
        compiled.append(dtype)
        return {"dtype": dtype}

    monkeypatch.setattr(four_bit_cuda.torch.version, "cuda", "13.0")
    monkeypatch.setattr(four_bit_cuda, "capable", lambda index: True)
    monkeypatch.setattr(four_bit_cuda, "_compiled", functools.cache(slow_compile))  # as the real one
    device = torch.device("cuda", 0)
    thread = four_bit_cuda.compile_in_background(device, (torch.bfloat16,))
    assert started.wait(5)
    assert four_bit_cuda.kernels(torch.bfloat16, device) == {"dtype": torch.bfloat16}
    thread.join(5)
    assert compiled == [torch.bfloat16]
