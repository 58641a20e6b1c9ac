import numpy as np
import pytest
import torch

from datamodules.datamodule import FieldDataModule
from datamodules.fields import FieldBatch, Grid, Sphere


class ArrayMaker:
    """A field maker over an in-memory (M, H, W) array, or a lazy list of items."""

    def __init__(self, splits, domain=None):
        self._splits, self.domain = splits, domain or Grid((2, 3))
        self.signal_dim, self.num_levels = 1, 256

    def splits(self):
        return self._splits

    def to_values(self, items):
        return (np.asarray(items, dtype=np.float32).reshape(len(items), -1, 1) / 127.5 - 1)


def items(n):
    return np.arange(n * 6, dtype=np.uint8).reshape(n, 2, 3)


def ids(dataset):
    """Item numbers of a split (item k starts at pixel value 6k)."""
    return {round((float(dataset[i][0, 0]) + 1) * 127.5) // 6 for i in range(len(dataset))}


def test_single_split_is_cut_into_disjoint_seeded_parts():
    dm = FieldDataModule(ArrayMaker({"all": items(40)}), batch_size=4, val_fraction=0.1, test_fraction=0.25, seed=3)
    dm.setup()
    parts = {name: ids(ds) for name, ds in dm.datasets.items()}
    assert [len(parts[k]) for k in ("train", "val", "test")] == [26, 4, 10]
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    again = FieldDataModule(ArrayMaker({"all": items(40)}), batch_size=4, val_fraction=0.1, test_fraction=0.25,
                            seed=3)
    again.setup()
    assert ids(again.datasets["test"]) == parts["test"]


def test_official_test_split_is_kept_and_lazy_items_load():
    lazy_train = [row for row in items(20)]  # a list, not an array: converted item by item
    dm = FieldDataModule(ArrayMaker({"train": lazy_train, "test": items(5)}), batch_size=4, val_fraction=0.2)
    dm.setup()
    assert (len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])) == (16, 4, 5)
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, FieldBatch) and batch.values.shape == (4, 6, 1) and batch.coords.shape == (4, 6, 2)
    assert batch.values.min() >= -1 and batch.values.max() <= 1


def test_global_batch_is_divided_by_world_size():
    dm = FieldDataModule(ArrayMaker({"all": items(40)}), batch_size=6)

    class FakeTrainer:
        world_size, training = 4, True

    dm.trainer = FakeTrainer()
    with pytest.raises(ValueError, match="multiple of 4"):
        dm.per_device_batch_size
    FakeTrainer.world_size = 3
    assert dm.per_device_batch_size == 2


def test_flip_mirrors_the_last_axis_and_is_grid_only():
    dm = FieldDataModule(ArrayMaker({"all": items(40)}), batch_size=4, flip=True)

    class FakeTrainer:
        world_size, training = 1, True

    dm.trainer = FakeTrainer()
    values = torch.arange(64 * 6, dtype=torch.float32).view(64, 6, 1)
    out = dm.on_after_batch_transfer(FieldBatch.from_values(values, Grid((2, 3))), 0).to_dense()
    dense = Grid((2, 3)).to_dense(values)
    mirrored = (out == dense.flip(-1)).flatten(1).all(1)
    assert ((out == dense).flatten(1).all(1) | mirrored).all() and 10 < mirrored.sum() < 54
    with pytest.raises(ValueError, match="data.flip=false"):
        FieldDataModule(ArrayMaker({"all": items(4)}, domain=Sphere((4, 4))), flip=True)
