"""Batch-invariant decode attention: each row's query heads over its own KV-cache slot, in a fixed order.

`scaled_dot_product_attention` picks a backend and, in the memory-efficient and flash kernels, a number of KV
splits from the batch size, the head count and the cache length, so a row's result can change with how many rows
run beside it and with the cache length the longest of them needs. Here one program per (row, KV head) attends
the query heads sharing that KV head over the row's positions in blocks of a fixed size, from position 0 up, with
an online softmax in float32. Nothing depends on other rows, and the cache length only adds blocks past the row's
last open position, which are not visited. Rounding is SDPA's on the GPU: scores and sums in float32, the
probabilities rounded to the values' dtype for the product with V, the output rounded once.
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import torch

from . import triton_support
from .batch_invariant_matmul import dot, dot_mode
from .triton_support import tl, triton

BLOCK_POSITIONS = 64  # KV positions per step; fixed, so the order of the sums never depends on the cache's length
MIN_DOT = 16  # Triton's smallest dot operand side

if triton is not None:

    @triton.jit
    def _attend_block(q, keys, values, mask, row, slot, start, end, best, total, acc, scale, MASK_LENGTH,
                      DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                      DOT: tl.constexpr):  # fmt: skip
        # One block of positions into the online softmax. A block with no attended position changes nothing:
        # every value is rescaled by exp(0) = 1 and added 0.
        d = tl.arange(0, BLOCK_D)
        position = start + tl.arange(0, BLOCK_L)
        attend = tl.load(mask + row * MASK_LENGTH + position, mask=position < end, other=0) != 0
        kv_at = slot + position[:, None] * DIM + d[None, :]
        kv_ok = attend[:, None] & (d < DIM)[None, :]
        k = tl.load(keys + kv_at, mask=kv_ok, other=0.0)
        v = tl.load(values + kv_at, mask=kv_ok, other=0.0)
        scores = dot(q, tl.trans(k), tl.zeros([q.shape[0], BLOCK_L], dtype=tl.float32), DOT)
        scores = tl.where(attend[None, :], scores * scale, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        rescale = tl.exp(best - new_best)
        p = tl.exp(scores - new_best[:, None])
        total = total * rescale + tl.sum(p, axis=1)
        acc = dot(p.to(v.dtype), v, acc * rescale[:, None], DOT)
        return new_best, total, acc

    @triton.jit
    def _decode_attention_kernel(query, keys, values, mask, positions, out, LENGTH, MASK_LENGTH, scale,
                                 KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr,
                                 BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                                 DOT: tl.constexpr, STATIC_STOP: tl.constexpr):  # fmt: skip
        # query [rows, KV_HEADS, GROUP, DIM]; keys / values [slots, KV_HEADS, LENGTH, DIM]; mask [slots, MASK_LENGTH]
        # (True: attend); positions [rows]: the row's current position, its last open one.
        row = tl.program_id(0)
        head = tl.program_id(1)
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, BLOCK_D)
        q_ok = (g < GROUP)[:, None] & (d < DIM)[None, :]
        q_at = ((row * KV_HEADS + head) * GROUP + g[:, None]) * DIM + d[None, :]
        q = tl.load(query + q_at, mask=q_ok, other=0.0)
        slot = (row * KV_HEADS + head) * LENGTH * DIM
        best = tl.full([BLOCK_G], -1.0e30, dtype=tl.float32)
        total = tl.zeros([BLOCK_G], dtype=tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
        end = tl.minimum(tl.load(positions + row) + 1, LENGTH)
        if STATIC_STOP > 0:
            # Triton's CPU interpreter takes only constant loop bounds: there every block of the cache is visited,
            # and those past `end` change nothing.
            for start in range(0, STATIC_STOP, BLOCK_L):
                best, total, acc = _attend_block(q, keys, values, mask, row, slot, start, end, best, total, acc,
                                                 scale, MASK_LENGTH, DIM, BLOCK_D, BLOCK_L, DOT)  # fmt: skip
        else:
            for start in range(0, end, BLOCK_L):
                best, total, acc = _attend_block(q, keys, values, mask, row, slot, start, end, best, total, acc,
                                                 scale, MASK_LENGTH, DIM, BLOCK_D, BLOCK_L, DOT)  # fmt: skip
        tl.store(out + q_at, (acc / total[:, None]).to(out.dtype.element_ty), mask=q_ok)


def decode_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Attention of rows 0..rows-1 over their own cache slots: query [rows, kv_heads, group, dim] (query head
    kv·group + g uses KV head kv), keys / values [slots ≥ rows, kv_heads, length, dim], mask [≥ rows, 1, 1, length]
    bool, positions [rows] long (each row's last open position) → [rows, kv_heads, group, dim] in query's dtype."""
    rows, kv_heads, group, dim = query.shape
    length = keys.shape[2]
    flat_mask = mask.reshape(mask.shape[0], -1)
    out = torch.empty_like(query, memory_format=torch.contiguous_format)
    _decode_attention_kernel[(rows, kv_heads)](
        query.contiguous(),
        keys,
        values,
        flat_mask,
        positions,
        out,
        length,
        flat_mask.shape[1],
        scale,
        KV_HEADS=kv_heads,
        GROUP=group,
        DIM=dim,
        BLOCK_G=max(MIN_DOT, triton.next_power_of_2(group)),
        BLOCK_D=max(MIN_DOT, triton.next_power_of_2(dim)),
        BLOCK_L=BLOCK_POSITIONS,
        DOT=dot_mode(query.dtype),
        STATIC_STOP=length if triton_support.INTERPRETED else 0,
        num_warps=4,
    )
    return out
