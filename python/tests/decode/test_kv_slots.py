"""The fast decoder's KV slots: growth keeps what is stored, moves carry a slot's cache and mask, release frees."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from idefics2_worker.decode.kv_slots import CACHE_GRANULE, KVSlots, bucket


def slots() -> KVSlots:
    return KVSlots(layers=2, kv_heads=2, head_dim=4, max_batch=8, dtype=torch.float32, device=torch.device("cpu"))


def prefill_cache(length: int, seed: int) -> SimpleNamespace:
    generator = torch.Generator().manual_seed(seed)
    layers = [
        SimpleNamespace(keys=torch.randn(1, 2, length, 4, generator=generator), values=torch.randn(1, 2, length, 4))
        for _ in range(2)
    ]
    return SimpleNamespace(layers=layers)


def test_slot_counts_come_in_powers_of_two_up_to_the_limit() -> None:
    assert [bucket(n, 8) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 8]


def test_growing_keeps_every_stored_position_and_counts_its_bytes() -> None:
    cache = slots()
    assert cache.nbytes() == 0
    assert cache.ensure(1, 10)
    assert (cache.slots, cache.length) == (1, CACHE_GRANULE)
    stored = prefill_cache(10, seed=1)
    cache.store_prefill(0, stored, 10)
    assert cache.ensure(3, CACHE_GRANULE + 1)
    assert not cache.ensure(2, 5)  # already large enough: nothing reallocated
    assert (cache.slots, cache.length) == (4, 2 * CACHE_GRANULE)
    assert torch.equal(cache.keys[1][0, :, :10], stored.layers[1].keys[0])
    assert cache.mask[0, 0, 0, :10].all()
    assert not cache.mask[0, 0, 0, 10:].any()
    assert cache.nbytes() == 2 * 2 * (4 * 2 * 2 * CACHE_GRANULE * 4) * 4


def test_moving_a_slot_carries_its_cache_and_mask_and_release_gives_everything_back() -> None:
    cache = slots()
    cache.ensure(2, 16)
    stored = prefill_cache(7, seed=2)
    cache.store_prefill(1, stored, 7)
    cache.move(1, 0)
    assert torch.equal(cache.values[0][0, :, :7], stored.layers[0].values[0])
    assert torch.equal(cache.mask[0], cache.mask[1])
    cache.release()
    assert (cache.slots, cache.length, cache.nbytes()) == (0, 0, 0)
