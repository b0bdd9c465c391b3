"""Every Triton kernel the worker launches compiles for Ampere (sm_80) and Hopper (sm_90) with Triton's own compiler,
on this GPU-less machine (compile_cases.py): the interpreter, which the other kernel tests use, accepts programs the
compiler rejects."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_step_kernels import TESTS


@pytest.mark.timeout(420)
def test_every_kernel_compiles_for_ampere_and_hopper() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(TESTS.parent)}
    command = [sys.executable, str(TESTS / "kernels" / "compile_cases.py"), "--capability"]
    runs = {
        capability: subprocess.Popen(
            [*command, str(capability)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=TESTS
        )
        for capability in (80, 90)
    }
    for capability, run in runs.items():
        stdout, stderr = run.communicate(timeout=400)
        assert run.returncode == 0, stderr[-3000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        assert result["failures"] == {}, (capability, result["failures"])
        assert len(result["expected"]) >= 13  # the package's kernels were found
        assert result["compiled"] == result["expected"], capability  # each one launched, so each one compiled
        assert result["launches"] > 100
