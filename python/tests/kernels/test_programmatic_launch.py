"""Programmatic dependent launch (kernels/programmatic_launch.py): off where it cannot run and outside the decode
graphs, and the driver structs laid out as cuda.h lays them (the launch itself runs on a GPU:
scripts/gpu/profile_decode_step.py, check_deterministic.py)."""

from __future__ import annotations

import ast
import ctypes
import pkgutil
from pathlib import Path

import pytest
import torch

from idefics2_worker import kernels
from idefics2_worker.kernels import programmatic_launch, triton_support
from idefics2_worker.kernels.programmatic_launch import _argument, _Attribute, _Config


def test_off_without_a_cuda_device() -> None:
    assert not programmatic_launch.supported(torch.device("cpu"))
    assert not programmatic_launch.enabled(torch.device("cpu"))
    assert programmatic_launch.triton_options(torch.device("cpu")) == {"PDL": False}


def test_launch_attribute_and_config_match_cuda_h() -> None:
    # CUlaunchAttribute: id, 4 bytes of padding, a 64-byte union; CUlaunchConfig: 7 uints, then the stream (8-byte
    # aligned), the attributes, their count.
    assert ctypes.sizeof(_Attribute) == 72
    assert _Attribute.value.offset == 8
    assert _Config.stream.offset == 32
    assert _Config.attributes.offset == 40
    assert _Config.attribute_count.offset == 48
    assert ctypes.sizeof(_Config) == 56


def test_arguments_are_pointers_and_ints_only() -> None:
    assert isinstance(_argument(7), ctypes.c_int)
    assert isinstance(_argument(torch.zeros(2)), ctypes.c_void_p)
    with pytest.raises(TypeError, match="float"):
        _argument(0.5)
    with pytest.raises(TypeError, match="bool"):
        _argument(True)


def test_only_inside_the_decode_graphs_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(programmatic_launch, "_capable", lambda index: True)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    cuda = torch.device("cuda", 0)
    assert not programmatic_launch.enabled(cuda)  # the prefill and eager steps: plain launches
    with programmatic_launch.decode_graph():
        assert programmatic_launch.enabled(cuda)
        with programmatic_launch.decode_graph():
            options = programmatic_launch.triton_options(cuda)
            assert options == {"PDL": triton_support.WAIT_FIRST, "launch_pdl": True}
        assert programmatic_launch.enabled(cuda)
        monkeypatch.setattr(programmatic_launch, "ENABLED", False)
        assert not programmatic_launch.enabled(cuda)
    monkeypatch.setattr(programmatic_launch, "ENABLED", True)
    assert not programmatic_launch.enabled(cuda)


def _programmatic_kernels() -> list[tuple[str, ast.FunctionDef]]:
    """Every Triton kernel in the kernels package that takes `PDL`, by module and name, with its syntax tree (not
    `triton_support`'s grid dependency calls themselves)."""
    found = []
    for module in pkgutil.iter_modules(kernels.__path__):
        if module.name == "triton_support":
            continue
        source = Path(kernels.__path__[0], f"{module.name}.py").read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and any(arg.arg == "PDL" for arg in node.args.args):
                found.append((f"{module.name}.{node.name}", node))
    return found


def _calls(node: ast.AST, name: str) -> bool:
    return any(
        isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == name
        for call in ast.walk(node)
    )


def test_every_kernel_taking_pdl_waits_before_anything_else() -> None:
    # A kernel launched programmatically that reads before `griddepcontrol.wait` reads what the previous kernel may not
    # have written yet (change 66's first form left the int8 MMA without it: H72's parity failed, H73's passed once it
    # waited). Its body must reach the wait (`start_after_previous(PDL)`, or a helper's call given `PDL`) as a
    # statement of its own, and before it only compute indices and read the weights, which nothing writes while the
    # step runs (programmatic_launch.WEIGHTS_FIRST).
    kernels_found = _programmatic_kernels()
    assert len(kernels_found) >= 10
    helpers = {name.split(".")[-1] for name, node in kernels_found if _waits_first(node, set())}
    late = [name for name, node in kernels_found if not _waits_first(node, helpers)]
    assert not late, f"kernels taking PDL that touch memory other than the weights before the wait: {late}"
    reading_weights_first = [name for name, node in kernels_found if _before_wait(node, helpers)]
    assert len(reading_weights_first) >= 4


def test_the_rule_catches_a_read_before_the_wait() -> None:
    source = """
def reads_x_early(x, weight, PDL):
    offsets = tl.arange(0, 16)
    w = tl.load(weight + offsets)
    a = tl.load(x + offsets)
    start_after_previous(PDL)
def never_waits(weight, PDL):
    w = tl.load(weight + tl.arange(0, 16))
def reads_weights_early(weight, out, PDL):
    offsets = tl.arange(0, 16)
    w = tl.zeros([16], dtype=tl.int8)
    if EARLY:
        w = tl.load(weight + offsets[:, None] * 4, mask=offsets < 8)
    start_after_previous(PDL)
    tl.store(out + offsets, w)
def stores_early(weight, out, PDL):
    tl.store(out, 1)
    start_after_previous(PDL)
def calls_a_helper_early(weight, PDL):
    helper(weight)
    start_after_previous(PDL)
"""
    functions = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    verdicts = {node.name: _waits_first(node, set()) for node in functions}
    assert verdicts == {
        "reads_x_early": False,
        "never_waits": False,
        "reads_weights_early": True,
        "stores_early": False,
        "calls_a_helper_early": False,
    }


def _is_wait(statement: ast.stmt, helpers: set[str]) -> bool:
    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
        return False
    call = statement.value
    if not isinstance(call.func, ast.Name):
        return False
    passes_pdl = any(isinstance(arg, ast.Name) and arg.id == "PDL" for arg in call.args)
    return passes_pdl and (call.func.id == "start_after_previous" or call.func.id in helpers)


def _before_wait(node: ast.FunctionDef, helpers: set[str]) -> list[ast.stmt] | None:
    """The statements before the body's wait (docstrings left out), or None where it has no wait of its own."""
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    at = next((i for i, statement in enumerate(body) if _is_wait(statement, helpers)), None)
    return None if at is None else body[:at]


def _waits_first(node: ast.FunctionDef, helpers: set[str]) -> bool:
    before = _before_wait(node, helpers)
    if before is None:
        return False
    for call in (c for statement in before for c in ast.walk(statement) if isinstance(c, ast.Call)):
        if not (isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)):
            return False  # a helper's call, which could read anything
        if call.func.value.id != "tl" or call.func.attr == "store" or call.func.attr.startswith("atomic"):
            return False
        if call.func.attr == "load" and _pointer_root(call.args[0]) != "weight":
            return False
    return True


def _pointer_root(pointer: ast.expr) -> str | None:
    # The tensor a pointer expression starts from: the leftmost name of `weight + offsets[...] * K + ...`.
    while isinstance(pointer, ast.BinOp):
        pointer = pointer.left
    return pointer.id if isinstance(pointer, ast.Name) else None
