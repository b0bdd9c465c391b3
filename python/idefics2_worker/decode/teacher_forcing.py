"""Teacher-forced logits of the fast decode path: the parity check of GPU runs and of the CPU tests.

Free-running tokens diverge at the first near-tie, so parity of two decode paths is judged on the same tokens:
each path is fed the reference's tokens and its logits are compared step by step.
"""

from __future__ import annotations

from typing import Any

import torch

from .graphs import DecodeGraphs
from .prefill import PrefillPlan, prefill


@torch.inference_mode()
def fast_path_logits(
    model: Any,
    inputs: Any,
    tokens: list[int],
    *,
    use_graphs: bool = True,
    kernels: bool | None = None,
    plan: PrefillPlan | None = None,
    copies: int = 1,
) -> torch.Tensor:
    """Float32 logits of shape [len(tokens), vocab]: row i predicts tokens[i] given the prompt and tokens[:i].

    The prefill runs as the worker's fast decoder runs it (`PrefillPlan.fastest`) unless `plan` says otherwise.
    With `copies`, the sequence fills that many slots and each step computes them all (the step's kernels for that
    many rows); the first copy's logits are returned.
    """
    graphs = DecodeGraphs(model, max_batch=copies, use_graphs=use_graphs, kernels=kernels)
    length = int(inputs["input_ids"].shape[1])
    graphs.ensure(copies, length + len(tokens))
    cache, first = prefill(model, inputs, plan or PrefillPlan.fastest(model))
    for slot in range(copies):
        graphs.store_prefill(slot, cache, length)
    rows = [first]
    for index, token in enumerate(tokens[:-1]):
        graphs.tokens[:copies] = token
        graphs.positions[:copies] = length + index
        rows.append(graphs.run(copies)[:1].clone())
    graphs.release()
    return torch.cat(rows)
