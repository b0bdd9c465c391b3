"""Triton kernels for the decode step's work between the projections: residual add + RMSNorm, rotary embedding
+ KV-cache write, and SiLU * up; the prefill takes the norm and the rotary embedding (one launch for a layer's
queries and keys) too.

Run module by module, a decode step of idefics2-8b launches ~1,600 kernels, ~1,200 of them small elementwise
ones (casts, pow, mean, rsqrt, neg, cat, index_put...): 3.3 of the 9.1 ms of a bf16 step on an H100
(docs/BENCHMARKS.md). Each kernel here does one of those groups in one launch and rounds where the module
code rounds: every bf16 result of the eager code is rounded to bf16 here too, so only the order of the float32
sum in the norm's mean and the last bits of rsqrt / exp can differ.
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

from typing import Any

import torch

from . import int8_quantize, programmatic_launch, triton_support
from .batch_invariant_matmul import SplitSums
from .triton_support import tl, triton

if triton is not None:
    from .int8_quantize import quantize_row
    from .triton_support import start_after_previous

    @triton.jit
    def _delta_row(delta, delta_bias, row, col, ok, ROWS, D: tl.constexpr, SPLITS: tl.constexpr,
                   HAS_BIAS: tl.constexpr, DTYPE: tl.constexpr):  # fmt: skip
        # The row of delta at `col`: a tensor's (SPLITS 0), or a split product's float32 partial sums [SPLITS, ROWS, D]
        # (batch_invariant_matmul.SplitSums) added as `_sum_splits_kernel` adds them, in split order with the bias,
        # rounded once to DTYPE, here instead of through memory in a launch of their own.
        values = tl.load(delta + row * D + col, mask=ok, other=0.0)
        if SPLITS > 0:
            for split in tl.static_range(1, SPLITS):
                values += tl.load(delta + (split * ROWS + row) * D + col, mask=ok, other=0.0)
            if HAS_BIAS:
                values += tl.load(delta_bias + col, mask=ok, other=0.0).to(tl.float32)
            values = values.to(DTYPE)
        return values

    @triton.jit
    def _add_rms_norm_row(residual, delta, delta_bias, weight, hidden_out, row, eps, ROWS, D: tl.constexpr,
                          BLOCK: tl.constexpr, HAS_DELTA: tl.constexpr, DELTA_SPLITS: tl.constexpr,
                          DELTA_BIAS: tl.constexpr, OUT_DTYPE: tl.constexpr):  # fmt: skip
        # MistralRMSNorm: w * (h32 * rsqrt(mean(h32²) + eps)).to(h.dtype), after h = residual + delta in h.dtype
        # (`_delta_row`). Returns the row's normed values in OUT_DTYPE (zero past D), its columns and their mask.
        col = tl.arange(0, BLOCK)
        ok = col < D
        hidden = tl.load(residual + row * D + col, mask=ok, other=0.0)
        if HAS_DELTA:
            values = _delta_row(delta, delta_bias, row, col, ok, ROWS, D, DELTA_SPLITS, DELTA_BIAS, hidden.dtype)
            added = hidden.to(tl.float32) + values.to(tl.float32)
            hidden = added.to(hidden.dtype)
            tl.store(hidden_out + row * D + col, hidden, mask=ok)
        wide = hidden.to(tl.float32)
        variance = tl.sum(wide * wide, axis=0) / D
        scaled = (wide * tl.math.rsqrt(variance + eps)).to(hidden.dtype)
        w = tl.load(weight + col, mask=ok, other=0.0)
        normed = w.to(tl.float32) * scaled.to(tl.float32)
        return normed.to(OUT_DTYPE), col, ok

    @triton.jit
    def _add_rms_norm_kernel(residual, delta, delta_bias, weight, hidden_out, normed_out, eps, ROWS, D: tl.constexpr,
                             BLOCK: tl.constexpr, HAS_DELTA: tl.constexpr, DELTA_SPLITS: tl.constexpr,
                             DELTA_BIAS: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        start_after_previous(PDL)
        row = tl.program_id(0)
        normed, col, ok = _add_rms_norm_row(residual, delta, delta_bias, weight, hidden_out, row, eps, ROWS, D, BLOCK,
                                            HAS_DELTA, DELTA_SPLITS, DELTA_BIAS,
                                            normed_out.dtype.element_ty)  # fmt: skip
        tl.store(normed_out + row * D + col, normed, mask=ok)

    @triton.jit
    def _add_rms_norm_quantize_kernel(residual, delta, weight, hidden_out, normed_out, quantized, stats, outliers,
                                      columns, counts, pieces, piece_scales, eps, threshold, D: tl.constexpr,
                                      BLOCK: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_THRESHOLD: tl.constexpr,
                                      SPAN: tl.constexpr, PIECES: tl.constexpr, LISTS: tl.constexpr,
                                      PDL: tl.constexpr):  # fmt: skip
        # The add + norm, then LLM.int8()'s quantisation of the normed row (int8_quantize.quantize_row) from the
        # values just rounded to the output dtype, which `quantize_rows` would read back from memory.
        start_after_previous(PDL)
        row = tl.program_id(0)
        normed, col, ok = _add_rms_norm_row(residual, delta, delta, weight, hidden_out, row, eps, 1, D, BLOCK,
                                            HAS_DELTA, 0, False, normed_out.dtype.element_ty)  # fmt: skip
        tl.store(normed_out + row * D + col, normed, mask=ok)
        column = tl.arange(0, BLOCK // SPAN)[:, None] * SPAN + tl.arange(0, SPAN)[None, :]
        quantize_row(tl.reshape(normed, [BLOCK // SPAN, SPAN]), row, column, column < D, D, quantized, stats,
                     outliers, columns, counts, pieces, piece_scales, threshold, HAS_THRESHOLD, BLOCK, SPAN,
                     PIECES, LISTS)  # fmt: skip

    @triton.jit
    def _rounded(x, y, OP: tl.constexpr, EXACT: tl.constexpr):
        # x * y or x + y in float32, rounded once. With EXACT (on a GPU), through PTX's .rn instructions: the compiler
        # neither fuses them with another operation nor narrows them to bfloat16 arithmetic. Written plainly, it
        # turned `bf16(a·cos) + bf16(-b·sin)`, rounded again, into one bf16 fma of a·cos and the other term: a
        # rounding fewer than the module code's, a bf16 step off torch in some elements (kernel_cases.py, H90).
        if EXACT:
            result = tl.inline_asm_elementwise(
                OP + ".rn.f32 $0, $1, $2;", "=f,f,f", [x, y], dtype=tl.float32, is_pure=True, pack=1
            )
        elif OP == "mul":
            result = x * y
        else:
            result = x + y
        return result

    @triton.jit
    def _rotate(source, cos, sin, HALF: tl.constexpr, BLOCK: tl.constexpr, EXACT: tl.constexpr):
        # transformers' apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, each product and the sum rounded.
        index = tl.arange(0, BLOCK)
        ok = index < HALF
        first = tl.load(source + index, mask=ok, other=0.0)
        second = tl.load(source + HALF + index, mask=ok, other=0.0)
        dtype = first.dtype
        cos_first = tl.load(cos + index, mask=ok, other=0.0).to(tl.float32)
        cos_second = tl.load(cos + HALF + index, mask=ok, other=0.0).to(tl.float32)
        sin_first = tl.load(sin + index, mask=ok, other=0.0).to(tl.float32)
        sin_second = tl.load(sin + HALF + index, mask=ok, other=0.0).to(tl.float32)
        a = first.to(tl.float32)
        b = second.to(tl.float32)
        a_cos = _rounded(a, cos_first, "mul", EXACT).to(dtype).to(tl.float32)
        b_sin = _rounded(-b, sin_first, "mul", EXACT).to(dtype).to(tl.float32)
        b_cos = _rounded(b, cos_second, "mul", EXACT).to(dtype).to(tl.float32)
        a_sin = _rounded(a, sin_second, "mul", EXACT).to(dtype).to(tl.float32)
        out_first = _rounded(a_cos, b_sin, "add", EXACT)
        out_second = _rounded(b_cos, a_sin, "add", EXACT)
        return out_first.to(dtype), out_second.to(dtype), index, ok

    @triton.jit
    def _rotary_cache_kernel(query, key, value, cos, sin, query_out, keys, values, positions, LENGTH, Q_ROW,
                             K_ROW, V_ROW, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, DIM: tl.constexpr,
                             BLOCK: tl.constexpr, EXACT: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        # Program (row, head): heads 0..HEADS-1 rotate a query head into query_out; the next KV_HEADS rotate a
        # key head and write it, with its value head, at the row's position in the row's cache slot. Q_ROW, K_ROW
        # and V_ROW step from row to row of the inputs (views into one q/k/v product's output are not contiguous).
        start_after_previous(PDL)
        row = tl.program_id(0)
        head = tl.program_id(1)
        HALF: tl.constexpr = DIM // 2
        row_cos = cos + row * DIM
        row_sin = sin + row * DIM
        if head < HEADS:
            first, second, index, ok = _rotate(query + row * Q_ROW + head * DIM, row_cos, row_sin, HALF, BLOCK, EXACT)
            target = query_out + (row * HEADS + head) * DIM
            tl.store(target + index, first, mask=ok)
            tl.store(target + HALF + index, second, mask=ok)
        else:
            kv_head = head - HEADS
            first, second, index, ok = _rotate(key + row * K_ROW + kv_head * DIM, row_cos, row_sin, HALF, BLOCK, EXACT)
            position = tl.load(positions + row)
            slot = ((row * KV_HEADS + kv_head) * LENGTH + position) * DIM
            tl.store(keys + slot + index, first.to(keys.dtype.element_ty), mask=ok)
            tl.store(keys + slot + HALF + index, second.to(keys.dtype.element_ty), mask=ok)
            whole = tl.arange(0, 2 * BLOCK)
            whole_ok = whole < DIM
            v = tl.load(value + row * V_ROW + kv_head * DIM + whole, mask=whole_ok, other=0.0)
            tl.store(values + slot + whole, v.to(values.dtype.element_ty), mask=whole_ok)

    @triton.jit
    def _prefill_rotary_kernel(query, key, cos, sin, query_out, key_out, LENGTH, Q_BATCH, Q_ROW, K_BATCH, K_ROW,
                               COS_BATCH, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, DIM: tl.constexpr,
                               BLOCK: tl.constexpr, EXACT: tl.constexpr):  # fmt: skip
        # Program (token, head): token = batch * LENGTH + position; heads 0..HEADS-1 rotate a query head, the next
        # KV_HEADS a key head. Inputs: heads DIM apart, rows Q_ROW / K_ROW apart (column slices of one q/k/v
        # product); outputs laid out as torch lays out the module code's results ([batch, position, head, dim]).
        token = tl.program_id(0)
        head = tl.program_id(1)
        batch = token // LENGTH
        position = token % LENGTH
        HALF: tl.constexpr = DIM // 2
        row_cos = cos + batch * COS_BATCH + position * DIM
        row_sin = sin + batch * COS_BATCH + position * DIM
        if head < HEADS:
            source = query + batch * Q_BATCH + position * Q_ROW + head * DIM
            target = query_out + (token * HEADS + head) * DIM
        else:
            kv_head = head - HEADS
            source = key + batch * K_BATCH + position * K_ROW + kv_head * DIM
            target = key_out + (token * KV_HEADS + kv_head) * DIM
        first, second, index, ok = _rotate(source, row_cos, row_sin, HALF, BLOCK, EXACT)
        tl.store(target + index, first, mask=ok)
        tl.store(target + HALF + index, second, mask=ok)

    @triton.jit
    def _silu_mul_kernel(gate, up, out, N, GATE_ROW, UP_ROW, BLOCK: tl.constexpr, PDL: tl.constexpr):
        # act_fn(gate) * up with act_fn = SiLU: silu rounded to the dtype, then the product rounded. Program (row,
        # block) of N-wide rows; GATE_ROW / UP_ROW step between the inputs' rows, `out` is contiguous.
        start_after_previous(PDL)
        row = tl.program_id(0)
        index = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = index < N
        g = tl.load(gate + row * GATE_ROW + index, mask=ok, other=0.0)
        u = tl.load(up + row * UP_ROW + index, mask=ok, other=0.0)
        wide = g.to(tl.float32)
        activated = (wide / (1.0 + tl.exp(-wide))).to(g.dtype)
        product = (activated.to(tl.float32) * u.to(tl.float32)).to(out.dtype.element_ty)
        tl.store(out + row * N + index, product, mask=ok)


def computes_norm(norm: Any) -> bool:
    """Whether `add_rms_norm` (without its add) computes this norm module's forward: MistralRMSNorm's formula, which
    transformers' norms named *RMSNorm with a `variance_epsilon` share."""
    return type(norm).__name__.endswith("RMSNorm") and hasattr(norm, "variance_epsilon")


def _norm_outputs(
    residual: torch.Tensor, delta: torch.Tensor | SplitSums | None, weight: torch.Tensor
) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """The norm kernels' width, rows and outputs: the sum (the residual itself without a delta) and the normed rows."""
    dim = residual.shape[-1]
    hidden = torch.empty_like(residual) if delta is not None else residual
    normed = torch.empty(
        residual.shape, dtype=torch.promote_types(weight.dtype, residual.dtype), device=residual.device
    )
    return dim, residual.numel() // dim, hidden, normed


def add_rms_norm(
    residual: torch.Tensor, delta: torch.Tensor | SplitSums | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual + delta, rms_norm(residual + delta)); without delta, (residual, rms_norm(residual)). delta may be a
    split product's partial sums (`batch_invariant_matmul.split_linear`), added here with the same bits as
    `batch_invariant_matmul.summed` and one launch fewer."""
    dim, rows, hidden, normed = _norm_outputs(residual, delta, weight)
    sums = delta if isinstance(delta, SplitSums) else None
    _add_rms_norm_kernel[(rows,)](
        residual,
        sums.partial if sums is not None else delta if delta is not None else residual,
        sums.bias if sums is not None and sums.bias is not None else residual,
        weight,
        hidden,
        normed,
        eps,
        rows,
        D=dim,
        BLOCK=triton.next_power_of_2(dim),
        HAS_DELTA=delta is not None,
        DELTA_SPLITS=sums.partial.shape[0] if sums is not None else 0,
        DELTA_BIAS=sums is not None and sums.bias is not None,
        num_warps=8 if dim >= 2048 else 4,
        **programmatic_launch.triton_options(residual.device),
    )
    return hidden, normed


def add_rms_norm_quantized(
    residual: torch.Tensor,
    delta: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    threshold: float,
    row_invariant: bool = False,
    warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int8_quantize.QuantizedRows]:
    """`add_rms_norm`, and the normed rows' LLM.int8() quantisation (`int8_quantize.quantize_rows`, the same bits)
    from the same launch: the 8-bit step's q/k/v and gate/up read the norm's output only in that form. `warps`:
    per row's program (`norm_quantize_warps` by default)."""
    dim, rows, hidden, normed = _norm_outputs(residual, delta, weight)
    quantized = int8_quantize.empty_rows(rows, dim, normed.dtype, residual.device, row_invariant)
    buffers, written = int8_quantize.kernel_buffers(quantized)
    block = int8_quantize.row_block(dim)
    _add_rms_norm_quantize_kernel[(rows,)](
        residual,
        delta if delta is not None else residual,
        weight,
        hidden,
        normed,
        *buffers,
        eps,
        int8_quantize.threshold_as_float16(threshold),
        D=dim,
        BLOCK=block,
        HAS_DELTA=delta is not None,
        HAS_THRESHOLD=threshold > 0.0,
        SPAN=int8_quantize.SPAN,
        num_warps=warps or norm_quantize_warps(dim),
        **written,
        **programmatic_launch.triton_options(residual.device),
    )
    return hidden, normed, quantized


def norm_quantize_warps(dim: int) -> int:
    """Warps of a program that norms and quantises a row of width dim: one per 256 columns of its block, up to 32.
    On an H200 (H30, `tune_quantize.py`) 16 warps for 4,096 columns took 3.3 us at one row and 3.0 at eight, where
    8 (the default before) took 3.7 and 3.1."""
    return min(32, max(1, int8_quantize.row_block(dim) // 256))


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as [rows, width] with contiguous rows, a view where its layout allows (the q/k/v and gate/up
    outputs are column slices of one product's output: rows a stride apart), else a copy."""
    rows = tensor.reshape(-1, tensor.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def rotary_into_cache(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    positions: torch.Tensor,
) -> torch.Tensor:
    """Rotated queries [rows, heads, dim]; rotated keys and the values written into cache slots 0..rows-1 at
    `positions`. query/key/value are the projections' outputs [rows, 1, heads·dim]; cos/sin [rows, 1, dim]."""
    rows = query.shape[0]
    kv_heads, length, dim = keys.shape[1:]
    heads = query.shape[-1] // dim
    query, key, value = _rows(query), _rows(key), _rows(value)
    query_out = torch.empty(rows, heads, dim, dtype=query.dtype, device=query.device)
    _rotary_cache_kernel[(rows, heads + kv_heads)](
        query,
        key,
        value,
        cos.contiguous(),
        sin.contiguous(),
        query_out,
        keys,
        values,
        positions,
        length,
        query.stride(0),
        key.stride(0),
        value.stride(0),
        **_rotary_options(heads, kv_heads, dim),
        **programmatic_launch.triton_options(query.device),
    )
    return query_out


def _rotary_options(heads: int, kv_heads: int, dim: int) -> dict[str, Any]:
    """The rotary kernels' shared launch options: a program per (row, head), its half-heads in one block, rounded as
    the module code rounds (`_rounded`) where the kernels run compiled."""
    return {
        "HEADS": heads,
        "KV_HEADS": kv_heads,
        "DIM": dim,
        "BLOCK": triton.next_power_of_2(dim // 2),
        "EXACT": not triton_support.INTERPRETED,
        "num_warps": 1,
    }


def prefill_rotary_applies(query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    """Whether `prefill_rotary` computes apply_rotary_pos_emb(query, key, cos, sin) for these inputs: query and key
    [batch, heads, positions, dim] with each head's dims contiguous and heads side by side (the projections' output
    viewed as heads and transposed), cos and sin [batch or 1, positions, dim] contiguous, one dtype for all."""
    if query.dim() != 4 or key.dim() != 4 or cos.dim() != 3 or cos.shape != sin.shape:
        return False
    batch, _, length, dim = query.shape
    if key.shape[0] != batch or key.shape[2:] != (length, dim) or cos.shape[1:] != (length, dim) or dim % 2:
        return False
    if cos.shape[0] not in {1, batch} or len({query.dtype, key.dtype, cos.dtype, sin.dtype}) != 1:
        return False
    heads_side_by_side = all(t.stride(-1) == 1 and t.stride(1) == dim for t in (query, key))
    return heads_side_by_side and all(t.is_contiguous() for t in (cos, sin))


def prefill_rotary(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' apply_rotary_pos_emb(query, key, cos, sin) in one launch (`prefill_rotary_applies` inputs): the
    same roundings, and outputs in the layout torch gives the module code's results for such inputs."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    query_out = torch.empty(batch, length, heads, dim, dtype=query.dtype, device=query.device)
    key_out = torch.empty(batch, length, kv_heads, dim, dtype=key.dtype, device=key.device)
    _prefill_rotary_kernel[(batch * length, heads + kv_heads)](
        query,
        key,
        cos,
        sin,
        query_out,
        key_out,
        length,
        query.stride(0),
        query.stride(2),
        key.stride(0),
        key.stride(2),
        cos.stride(0) if cos.shape[0] > 1 else 0,
        **_rotary_options(heads, kv_heads, dim),
    )
    return query_out.transpose(1, 2), key_out.transpose(1, 2)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    out = torch.empty(gate.shape, dtype=torch.promote_types(gate.dtype, up.dtype), device=gate.device)
    gate_rows, up_rows = _rows(gate), _rows(up)
    width = gate.shape[-1]
    block = 1024
    grid = (gate_rows.shape[0], triton.cdiv(width, block))
    options = programmatic_launch.triton_options(gate.device)
    _silu_mul_kernel[grid](
        gate_rows, up_rows, out, width, gate_rows.stride(0), up_rows.stride(0), BLOCK=block, **options
    )
    return out
