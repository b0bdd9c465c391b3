"""The batch-invariant kernels give a row the same bits in a batch of 1, 3, 8 or 20 rows, close to torch's result.

They run in Triton's CPU interpreter (see test_step_kernels.py); `batch_invariant_cases.py --device cuda` runs the same
cases on a GPU, where the dot products run on the tensor cores instead of the interpreter's broadcast sums.
"""

from __future__ import annotations

import json

import pytest
from test_step_kernels import TESTS, interpreted


# ~230 s on a 2-core machine (2026-12-02; ~115 before the int8 CUDA-core kernel's several-row cases), ~85 of it the
# attention cases: the limits leave room for a slower or busier machine.
@pytest.mark.timeout(430)
def test_each_row_is_the_same_bits_whatever_shares_its_batch() -> None:
    done = interpreted(str(TESTS / "kernels" / "batch_invariant_cases.py"), timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 2 * 4 + 2 * 5 + 2 + 4
    for case, result in results.items():
        assert result["invariant"], case
        # float32: the order of float32 sums differs from torch's (a few steps of 2^-23); the int8 product's main
        # term is rounded to float16 as bitsandbytes rounds it (2^13 float32 steps). bfloat16: one rounding, plus
        # the interpreter's truncating float32 → bfloat16 conversion.
        limit = (2.0**13 if "int8" in case else 8.0) if "float32" in case else 3.0
        assert result["steps"] <= limit, (case, result)
