"""Batch-invariant decode attention: each row's query heads over its own KV-cache slot, in a fixed order.

`scaled_dot_product_attention` picks a backend and, in the memory-efficient and flash kernels, a number of KV
splits from the batch size, the head count and the cache length, so a row's result can change with how many rows
run beside it and with the cache length the longest of them needs. Here the splits are fixed: one program per
(row, KV head, block of BLOCK_POSITIONS positions) attends the query heads sharing that KV head over its block, with
the softmax's running max and sum in float32, and a second kernel merges a row's blocks: weighted by the row's
largest max and summed in chunks of a fixed number of blocks. Nothing depends on other rows, and the cache length only
adds blocks past the row's last open position, which are not merged. Rounding is SDPA's on the GPU: scores and sums
in float32, the probabilities rounded to the values' dtype for the product with V, the output rounded once.

Splitting the positions is flash-decoding's idea: one program per (row, KV head) walking all ~900 positions of the
blog's prompt was 8 programs at batch 1 on a 132-SM card, 24 µs per layer for 3.7 MB (0.76 ms of a 5.6 ms bf16
step on an H200); split, 4.4 + 5.2 µs (docs/BENCHMARKS.md, change 8).
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import torch

from . import programmatic_launch, triton_support
from .batch_invariant_matmul import dot_mode
from .triton_support import tl, triton

BLOCK_POSITIONS = 64  # KV positions per step; fixed, so the order of the sums never depends on the cache's length
MIN_DOT = 16  # Triton's smallest dot operand side
# Splits merged at once: 16 cover 1,024 positions (the blog's prompt and its answer) in one pass; the [16, group 4,
# 128] float32 tile is 128 values a thread at 2 warps (190 registers on sm_90, no spills). Fixed, like
# BLOCK_POSITIONS: the sums' tree never changes. (8 a chunk, two passes at the blog's length: 0.43 ms against 0.24 in
# H60's sequence below; 32: 0.30.)
MERGE_CHUNK = 16
# The merge's warps, as measured: in a captured 32-layer sequence at the blog's length (bench_decode_attention.py,
# H59, H60) the attention took 0.24 to 0.26 ms a token at one row with 2 warps, 0.30 with 1, 0.39 to 0.40 with 4, 0.43
# with 8, and 0.44 merging one split after another (the split kernel alone: 0.18). Why 4 and 8 cost more was not
# measured; at 4 Triton's code uses five layouts of the merge's tensors, at 2 three (their TTGIR, sm_90).
MERGE_WARPS = 2

if triton is not None:
    # Without Triton (CPU builds of torch) there is no `dot`: the decoder then never calls these kernels.
    from .batch_invariant_matmul import dot
    from .triton_support import start_after_previous

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
    def _split_partial(query, keys, values, mask, positions, part_acc, part_best, part_total, row, head, split,
                       LENGTH, MASK_LENGTH, SPLITS, scale, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                       DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                       DOT: tl.constexpr):  # fmt: skip
        # Program (row, head, split) attends positions split·BLOCK_L .. +BLOCK_L and stores its unnormalised partial;
        # a split past the row's last position stores the neutral one (best -1e30, total 0) without reading the
        # cache. Returns the row's end (its last position + 1, at most LENGTH).
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, BLOCK_D)
        q_ok = (g < GROUP)[:, None] & (d < DIM)[None, :]
        q = tl.load(query + ((row * KV_HEADS + head) * GROUP + g[:, None]) * DIM + d[None, :], mask=q_ok, other=0.0)
        slot = (row * KV_HEADS + head) * LENGTH * DIM
        end = tl.minimum(tl.load(positions + row) + 1, LENGTH)
        best = tl.full([BLOCK_G], -1.0e30, dtype=tl.float32)
        total = tl.zeros([BLOCK_G], dtype=tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
        best, total, acc = _attend_block(q, keys, values, mask, row, slot, split * BLOCK_L, end, best, total, acc,
                                         scale, MASK_LENGTH, DIM, BLOCK_D, BLOCK_L, DOT)  # fmt: skip
        part = ((row * KV_HEADS + head) * SPLITS + split) * BLOCK_G
        # Only the group's rows: the rest pad the dot's operand and are never merged.
        tl.store(part_best + part + g, best, mask=g < GROUP)
        tl.store(part_total + part + g, total, mask=g < GROUP)
        tl.store(part_acc + (part + g[:, None]) * BLOCK_D + d[None, :], acc, mask=(g < GROUP)[:, None])
        return end

    @triton.jit
    def _split_kernel(query, keys, values, mask, positions, part_acc, part_best, part_total, LENGTH, MASK_LENGTH,
                      SPLITS, scale, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr,
                      BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                      DOT: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        # query [rows, KV_HEADS, GROUP, DIM]; keys / values [slots, KV_HEADS, LENGTH, DIM]; mask [slots, MASK_LENGTH]
        # (True: attend); positions [rows]: the row's current position, its last open one.
        start_after_previous(PDL)
        _split_partial(query, keys, values, mask, positions, part_acc, part_best, part_total, tl.program_id(0),
                       tl.program_id(1), tl.program_id(2), LENGTH, MASK_LENGTH, SPLITS, scale, KV_HEADS, GROUP, DIM,
                       BLOCK_G, BLOCK_D, BLOCK_L, DOT)  # fmt: skip

    @triton.jit
    def _merge_chunk(part_best, first, chunk, count, h, CHUNK: tl.constexpr, GROUP: tl.constexpr,
                     BLOCK_G: tl.constexpr):  # fmt: skip
        # The chunk's partials' offsets [CHUNK, group] and which are the row's, and their maxima (-1e30 elsewhere).
        split = chunk * CHUNK + tl.arange(0, CHUNK)
        at = (first + split)[:, None] * BLOCK_G + h[None, :]
        ok = (split < count)[:, None] & (h < GROUP)[None, :]
        return at, ok, tl.load(part_best + at, mask=ok, other=-1.0e30)

    @triton.jit
    def _merge(part_acc, part_best, part_total, first, count, chunks, h, d, CHUNK: tl.constexpr, GROUP: tl.constexpr,
               DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
        top = tl.full([h.shape[0]], -1.0e30, dtype=tl.float32)
        for chunk in range(chunks):
            _, _, best = _merge_chunk(part_best, first, chunk, count, h, CHUNK, GROUP, BLOCK_G)
            top = tl.maximum(top, tl.max(best, axis=0))
        total = tl.zeros([h.shape[0]], dtype=tl.float32)
        acc = tl.zeros([h.shape[0], BLOCK_D], dtype=tl.float32)
        for chunk in range(chunks):
            at, ok, best = _merge_chunk(part_best, first, chunk, count, h, CHUNK, GROUP, BLOCK_G)
            weight = tl.where(ok, tl.exp(best - top[None, :]), 0.0)
            total += tl.sum(tl.load(part_total + at, mask=ok, other=0.0) * weight, axis=0)
            acc_ok = ok[:, :, None] & (d < DIM)[None, None, :]
            split_acc = tl.load(part_acc + at[:, :, None] * BLOCK_D + d[None, None, :], mask=acc_ok, other=0.0)
            acc += tl.sum(split_acc * weight[:, :, None], axis=0)
        return total, acc

    @triton.jit
    def _merge_into(out, part_acc, part_best, part_total, row, head, first, count, chunks, CHUNK: tl.constexpr,
                    KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr, BLOCK_G: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr):  # fmt: skip
        # The (row, head)'s partials merged over `chunks` chunks, normalised once, stored in out's dtype.
        h = tl.arange(0, BLOCK_H)
        d = tl.arange(0, BLOCK_D)
        total, acc = _merge(part_acc, part_best, part_total, first, count, chunks, h, d, CHUNK, GROUP, DIM, BLOCK_G,
                            BLOCK_D)  # fmt: skip
        out_ok = (h < GROUP)[:, None] & (d < DIM)[None, :]
        out_at = ((row * KV_HEADS + head) * GROUP + h[:, None]) * DIM + d[None, :]
        tl.store(out + out_at, (acc / total[:, None]).to(out.dtype.element_ty), mask=out_ok)

    @triton.jit
    def _combine_kernel(part_acc, part_best, part_total, positions, out, LENGTH, SPLITS, KV_HEADS: tl.constexpr,
                        GROUP: tl.constexpr, DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, CHUNK: tl.constexpr,
                        STATIC_CHUNKS: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        # The row's partials weighted by exp(best - the row's largest best) and summed, CHUNK splits at a time, and
        # normalised once. The largest best is exact whatever the order; each chunk's sum is a tree of fixed shape
        # over CHUNK splits, the ones past the row's last position masked to 0, so the bits depend on the row's own
        # positions only, never on the cache's length. (Merging one split after another, H56's merge, took 0.26 ms
        # a token at one row in H59's 32-layer sequence; this, at 2 warps, 0.06.)
        start_after_previous(PDL)
        row = tl.program_id(0)
        head = tl.program_id(1)
        first = (row * KV_HEADS + head) * SPLITS
        count = tl.cdiv(tl.minimum(tl.load(positions + row) + 1, LENGTH), BLOCK_L)
        if STATIC_CHUNKS > 0:
            # Triton's CPU interpreter takes only constant loop bounds: there every chunk is read, the splits past the
            # row's last position masked.
            _merge_into(out, part_acc, part_best, part_total, row, head, first, count, STATIC_CHUNKS, CHUNK, KV_HEADS,
                        GROUP, DIM, BLOCK_G, BLOCK_D, BLOCK_H)  # fmt: skip
        else:
            _merge_into(out, part_acc, part_best, part_total, row, head, first, count, tl.cdiv(count, CHUNK), CHUNK,
                        KV_HEADS, GROUP, DIM, BLOCK_G, BLOCK_D, BLOCK_H)  # fmt: skip


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
    block_g = max(MIN_DOT, triton.next_power_of_2(group))
    block_d = max(MIN_DOT, triton.next_power_of_2(dim))
    splits = triton.cdiv(length, BLOCK_POSITIONS)
    part_acc = torch.empty(rows, kv_heads, splits, block_g, block_d, dtype=torch.float32, device=query.device)
    part_best = torch.empty(rows, kv_heads, splits, block_g, dtype=torch.float32, device=query.device)
    part_total = torch.empty_like(part_best)
    programmatic = programmatic_launch.triton_options(query.device)
    shapes = {"KV_HEADS": kv_heads, "GROUP": group, "DIM": dim, "BLOCK_G": block_g, "BLOCK_D": block_d}
    _split_kernel[(rows, kv_heads, splits)](
        query.contiguous(),
        keys,
        values,
        flat_mask,
        positions,
        part_acc,
        part_best,
        part_total,
        length,
        flat_mask.shape[1],
        splits,
        scale,
        **shapes,
        BLOCK_L=BLOCK_POSITIONS,
        DOT=dot_mode(query.dtype),
        num_warps=4,
        **programmatic,
    )
    _combine_kernel[(rows, kv_heads)](
        part_acc,
        part_best,
        part_total,
        positions,
        out,
        length,
        splits,
        **shapes,
        BLOCK_L=BLOCK_POSITIONS,
        BLOCK_H=triton.next_power_of_2(group),
        CHUNK=MERGE_CHUNK,
        STATIC_CHUNKS=triton.cdiv(splits, MERGE_CHUNK) if triton_support.INTERPRETED else 0,
        num_warps=MERGE_WARPS,
        **programmatic,
    )
    return out
