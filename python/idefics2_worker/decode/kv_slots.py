"""The fast decoder's KV cache: one slot (row) per running sequence, preallocated per layer, with an attention
mask that opens each slot to its own sequence's positions. A slot is filled from one row of a prefill's cache, so
requests prefilled together each take their own row."""

from __future__ import annotations

from typing import Any

import torch

CACHE_GRANULE = 256


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


def bucket(count: int, limit: int) -> int:
    """The power of two at or above `count`, at most `limit`: slot counts and graph sizes come in these steps."""
    size = 1
    while size < count:
        size *= 2
    return min(size, limit)


class KVSlots:
    """Keys and values of shape [slots, kv_heads, length, head_dim] per layer, plus mask [max_batch, 1, 1, length]."""

    def __init__(  # noqa: PLR0917 - the cache's shape, type and place
        self, layers: int, kv_heads: int, head_dim: int, max_batch: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.max_batch, self.dtype, self.device = max_batch, dtype, device
        self.slots = 0
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask = torch.zeros(max_batch, 1, 1, 0, dtype=torch.bool, device=device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def ensure(self, slots: int, length: int) -> bool:
        """Grows to at least `slots` rows of `length` positions, keeping what is stored; True when it reallocated."""
        slots = max(self.slots, bucket(slots, self.max_batch))
        length = max(self.length, _round_up(length, CACHE_GRANULE))
        if slots == self.slots and length == self.length:
            return False
        shape = (slots, self.kv_heads, length, self.head_dim)
        keys, values = [], []
        for index in range(self.layers):
            key = torch.zeros(shape, dtype=self.dtype, device=self.device)
            value = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.keys:
                key[: self.slots, :, : self.length].copy_(self.keys[index])
                value[: self.slots, :, : self.length].copy_(self.values[index])
            keys.append(key)
            values.append(value)
        mask = torch.zeros(self.max_batch, 1, 1, length, dtype=torch.bool, device=self.device)
        mask[:, :, :, : self.length].copy_(self.mask)
        self.keys, self.values, self.mask = keys, values, mask
        self.slots, self.length = slots, length
        return True

    def release(self) -> None:
        self.keys, self.values = [], []
        self.mask = torch.zeros(self.max_batch, 1, 1, 0, dtype=torch.bool, device=self.device)
        self.slots = self.length = 0

    def store_prefill(self, slot: int, cache: Any, length: int, row: int = 0) -> None:
        """Copies row `row` of a prefill's cache (transformers' DynamicCache; a batched prefill has one row per
        prompt, right-padded) into a slot and opens its mask to `length`, the row's own prompt."""
        for index, layer in enumerate(cache.layers):
            self.keys[index][slot, :, :length].copy_(layer.keys[row, :, :length])
            self.values[index][slot, :, :length].copy_(layer.values[row, :, :length])
        self.mask[slot].zero_()
        self.mask[slot, :, :, :length] = True

    def move(self, source: int, target: int) -> None:
        """Moves a sequence's slot so running sequences stay in the lowest rows."""
        for key, value in zip(self.keys, self.values, strict=True):
            key[target].copy_(key[source])
            value[target].copy_(value[source])
        self.mask[target].copy_(self.mask[source])
