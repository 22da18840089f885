"""Training bags held on the training device (or read from the memory map) give equal batches."""

from __future__ import annotations

import numpy as np
import torch

from stmil.mil.bags import BagStore


def _bags(path) -> np.ndarray:
    """A memory-mapped float16 bag cache: bag i is filled with i + 0.5, instance j adds j/8."""
    bags = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(4, 3, 2, 5))
    bags[:] = (np.arange(4) + 0.5)[:, None, None, None] + (np.arange(2) / 8)[None, None, :, None]
    bags.flush()
    return np.load(path, mmap_mode="r")


def test_resident_and_memmap_batches_are_equal(tmp_path):
    bags = _bags(tmp_path / "bags.npy")
    resident, mapped = BagStore(bags, "cpu"), BagStore(bags, "cpu", max_bytes=0)
    assert resident.resident and not mapped.resident and len(resident) == 4
    for store in (resident, mapped):
        batch = store.gather(np.array([2, 0, 2]))
        assert batch.dtype == torch.float32 and batch.shape == (3, 3, 2, 5)
        assert torch.equal(batch[:, 0, 0, 0], torch.tensor([2.5, 0.5, 2.5]))
        assert torch.equal(batch[:, 1, 1, 4], torch.tensor([2.625, 0.625, 2.625]))


def test_a_resident_store_holds_its_own_copy(tmp_path):
    store = BagStore(_bags(tmp_path / "bags.npy"), "cpu")
    store.bags = None  # a resident store never reads the memory map again
    assert torch.equal(store.gather([3])[0, 2, 0], torch.full((5,), 3.5))


def test_a_view_of_the_map_is_read_through_the_map(tmp_path):
    """Only a whole-file map is read with file reads; a slice of it keeps its own offset."""
    store = BagStore(_bags(tmp_path / "bags.npy")[1:], "cpu")
    assert len(store) == 3 and torch.equal(store.gather([0])[0, 0, 1], torch.full((5,), 1.625))
