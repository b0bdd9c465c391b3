"""The fast decoder's KV slots: growth keeps what is stored, moves carry a slot's cache and mask, release frees,
and a batched prefill's rows each fill their own slot, a group of them in one call."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from idefics2_worker.decode import kv_slots
from idefics2_worker.decode.kv_slots import CACHE_GRANULE, KVSlots, bucket


def slots() -> KVSlots:
    return KVSlots(layers=2, kv_heads=2, head_dim=4, max_batch=8, dtype=torch.float32, device=torch.device("cpu"))


def prefill_cache(length: int, seed: int, rows: int = 1) -> SimpleNamespace:
    """transformers' DynamicCache as the slots read it: per layer, keys and values [rows, kv_heads, length, dim]."""
    generator = torch.Generator().manual_seed(seed)
    layers = [
        SimpleNamespace(
            keys=torch.randn(rows, 2, length, 4, generator=generator),
            values=torch.randn(rows, 2, length, 4, generator=generator),
        )
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


def test_each_row_of_a_batched_prefill_fills_its_own_slot_up_to_its_own_length() -> None:
    cache = slots()
    cache.ensure(4, 16)
    earlier = prefill_cache(5, seed=3)
    cache.store_prefill(0, earlier, 5)
    batched = prefill_cache(9, seed=4, rows=3)  # right-padded to the longest of lengths 9, 4, 6
    for slot, (row, length) in zip((1, 2), ((2, 6), (0, 9)), strict=True):
        cache.store_prefill(slot, batched, length, row)
    for index in range(2):
        assert torch.equal(cache.keys[index][0, :, :5], earlier.layers[index].keys[0])
        assert torch.equal(cache.keys[index][1, :, :6], batched.layers[index].keys[2, :, :6])
        assert torch.equal(cache.values[index][1, :, :6], batched.layers[index].values[2, :, :6])
        assert torch.equal(cache.keys[index][2, :, :9], batched.layers[index].keys[0])
        assert not cache.keys[index][1, :, 6:].any()  # the row's padding stays out of the slot
    assert cache.mask[1, 0, 0, :6].all()
    assert not cache.mask[1, 0, 0, 6:].any()
    assert cache.mask[2, 0, 0, :9].all()
    assert not cache.mask[3].any()


def test_a_groups_rows_go_into_consecutive_slots_in_one_call_each_up_to_its_own_length() -> None:
    cache = slots()
    cache.ensure(8, 16)
    cache.store_prefill(0, prefill_cache(12, seed=5), 12)
    old = cache.keys[0][3].clone()  # a slot the group does not reach keeps what it held
    batched = prefill_cache(9, seed=6, rows=4)  # lengths 9, 4, 6, 2: rows 1 and 3 are left out (e.g. cancelled)
    cache.store_prefills(1, batched, [0, 2], [9, 6])
    for index in range(2):
        layer = batched.layers[index]
        for slot, (row, length) in zip((1, 2), ((0, 9), (2, 6)), strict=True):
            for stored, prefilled in ((cache.keys, layer.keys), (cache.values, layer.values)):
                assert torch.equal(stored[index][slot, :, :length], prefilled[row, :, :length])
                assert not stored[index][slot, :, length:].any()
    assert torch.equal(cache.keys[0][3], old)
    assert [int(cache.mask[slot].sum()) for slot in range(4)] == [12, 9, 6, 0]
    assert cache.mask[2, 0, 0, :6].all()


def test_a_large_group_is_gathered_in_passes_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    whole, passes = slots(), slots()
    batched = prefill_cache(9, seed=7, rows=3)
    for cache in (whole, passes):
        cache.ensure(4, 16)
    whole.store_prefills(1, batched, [0, 1, 2], [9, 3, 7])
    monkeypatch.setattr(kv_slots, "GATHER_BYTES", 1)  # one layer a pass
    passes.store_prefills(1, batched, [0, 1, 2], [9, 3, 7])
    for index in range(2):
        assert torch.equal(whole.keys[index], passes.keys[index])
        assert torch.equal(whole.values[index], passes.values[index])
    assert torch.equal(whole.mask, passes.mask)


def test_each_layers_slots_are_a_contiguous_view_of_one_tensor_kept_across_growth() -> None:
    cache = slots()
    cache.ensure(2, 16)
    stored = prefill_cache(5, seed=8)
    cache.store_prefill(1, stored, 5)
    cache.ensure(4, CACHE_GRANULE + 1)
    keys = cache.keys
    assert all(key.is_contiguous() and key.shape == (4, 2, 2 * CACHE_GRANULE, 4) for key in keys)
    assert keys[1].data_ptr() - keys[0].data_ptr() == keys[0].numel() * keys[0].element_size()
    assert torch.equal(cache.values[1][1, :, :5], stored.layers[1].values[0])
    cache.keys[1][0, 0, 0, 0] = 7.0  # a layer's view writes into the one tensor, where moves read it
    cache.move(0, 3)
    assert cache.keys[1][3, 0, 0, 0] == 7.0
