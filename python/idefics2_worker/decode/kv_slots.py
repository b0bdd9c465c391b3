"""The fast decoder's KV cache: one slot (row) per running sequence, preallocated, with an attention mask that
opens each slot to its own sequence's positions. A slot is filled from one row of a prefill's cache, so requests
prefilled together each take their own row.

Every layer's keys live in one tensor [layers, slots, kv_heads, length, head_dim] (and the values in another); each
layer reads its own slice, as contiguous as a tensor of its own. Copying a group of prefilled rows into their slots,
moving a slot or growing the cache is then a few kernels for all layers at once, where a tensor per layer took one
copy per layer and row: 8 x 64 copies to admit eight prompts and 4 x 64 more when eight sequences ended in one step,
each launched from Python while the GPU waited (the admission is bound by the host, docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

CACHE_GRANULE = 256
# Most bytes a group's rows are gathered in at once (per keys or values) before their copy into the slots: eight blog
# prompts are ~450 MB over 32 layers, so they go in two passes.
GATHER_BYTES = 256 << 20


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


def bucket(count: int, limit: int) -> int:
    """The power of two at or above `count`, at most `limit`: slot counts and graph sizes come in these steps."""
    size = 1
    while size < count:
        size *= 2
    return min(size, limit)


def _consecutive(indices: Sequence[int]) -> bool:
    return list(indices) == list(range(indices[0], indices[0] + len(indices)))


class KVSlots:
    """Per layer, keys and values of shape [slots, kv_heads, length, head_dim] (`keys[i]`, `values[i]`: views into one
    tensor each), plus mask [max_batch, 1, 1, length]."""

    def __init__(  # noqa: PLR0917 - the cache's shape, type and place
        self, layers: int, kv_heads: int, head_dim: int, max_batch: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.max_batch, self.dtype, self.device = max_batch, dtype, device
        self.slots = 0
        self.length = 0
        self._stored: tuple[torch.Tensor, torch.Tensor] | None = None  # keys, values [layers, slots, ...]
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask = torch.zeros(max_batch, 1, 1, 0, dtype=torch.bool, device=device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._stored or ())

    def ensure(self, slots: int, length: int) -> bool:
        """Grows to at least `slots` rows of `length` positions, keeping what is stored; True when it reallocated."""
        slots = max(self.slots, bucket(slots, self.max_batch))
        length = max(self.length, _round_up(length, CACHE_GRANULE))
        if slots == self.slots and length == self.length:
            return False
        shape = (self.layers, slots, self.kv_heads, length, self.head_dim)
        grown = tuple(torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(2))
        for new, old in zip(grown, self._stored or (), strict=False):
            new[:, : self.slots, :, : self.length].copy_(old)
        mask = torch.zeros(self.max_batch, 1, 1, length, dtype=torch.bool, device=self.device)
        mask[:, :, :, : self.length].copy_(self.mask)
        self._set(grown[0], grown[1])
        self.mask = mask
        self.slots, self.length = slots, length
        return True

    def _set(self, keys: torch.Tensor | None, values: torch.Tensor | None) -> None:
        self._stored = None if keys is None or values is None else (keys, values)
        self.keys = list(keys.unbind(0)) if keys is not None else []
        self.values = list(values.unbind(0)) if values is not None else []

    def release(self) -> None:
        self._set(None, None)
        self.mask = torch.zeros(self.max_batch, 1, 1, 0, dtype=torch.bool, device=self.device)
        self.slots = self.length = 0

    def store_prefill(self, slot: int, cache: Any, length: int, row: int = 0) -> None:
        """Copies row `row` of a prefill's cache into a slot and opens its mask to `length` (`store_prefills`)."""
        self.store_prefills(slot, cache, [row], [length])

    def store_prefills(self, first_slot: int, cache: Any, rows: Sequence[int], lengths: Sequence[int]) -> None:
        """Copies rows `rows` of a prefill's cache (transformers' DynamicCache; a batched prefill has one row per
        prompt, right-padded) into slots first_slot, first_slot + 1, ..., each up to its own length in `lengths`,
        and opens each slot's mask to that length. A row's padding past its length stays out of its slot."""
        if not rows:
            return
        assert self._stored is not None, "ensure() the slots before storing in them"
        count, longest = len(rows), max(lengths)
        targets = slice(first_slot, first_slot + count)
        picked = slice(rows[0], rows[0] + count) if _consecutive(rows) else None
        index = None if picked is not None else torch.tensor(list(rows), device=self.device)
        valid = padding = None
        if min(lengths) < longest:
            ends = torch.tensor(list(lengths), device=self.device)
            valid = torch.arange(longest, device=self.device) < ends[:, None]  # [count, longest]
            padding = ~valid[None, :, None, :, None]  # as the gathered [layers, count, kv_heads, longest, dim]
        layers = list(cache.layers)
        for stored, name in zip(self._stored, ("keys", "values"), strict=True):
            sources = [getattr(layer, name) for layer in layers]
            layer_bytes = count * self.kv_heads * longest * self.head_dim * sources[0].element_size()
            step = max(1, GATHER_BYTES // max(1, layer_bytes))
            for first in range(0, len(sources), step):
                chunk = sources[first : first + step]
                gathered = torch.stack([source[picked or slice(None), :, :longest] for source in chunk])
                if index is not None:
                    gathered = gathered.index_select(1, index)
                if padding is not None:
                    gathered.masked_fill_(padding, 0)
                stored[first : first + len(chunk), targets, :, :longest].copy_(gathered)
        self.mask[targets] = False
        if valid is None:
            self.mask[targets, :, :, :longest] = True
        else:
            self.mask[targets, 0, 0, :longest] = valid

    def move(self, source: int, target: int) -> None:
        """Moves a sequence's slot so running sequences stay in the lowest rows."""
        for stored in self._stored or ():
            stored[:, target].copy_(stored[:, source])
        self.mask[target].copy_(self.mask[source])
