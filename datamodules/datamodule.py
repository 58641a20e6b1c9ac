"""FieldDataModule: seeded splits of a field maker's data into loaders of full-field `FieldBatch`es."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.fields import FieldBatch

log = logging.getLogger(__name__)


class FieldDataset(Dataset):
    """Field values of one split; an in-memory split is converted once, a lazy one item by item (in workers)."""

    def __init__(self, field_maker, items: Sequence, indices: np.ndarray):
        self.field_maker, self.items, self.indices = field_maker, items, indices
        self.values = None
        if isinstance(items, np.ndarray):
            self.values = torch.from_numpy(field_maker.to_values(items[indices]))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.values is not None:
            return self.values[i]
        item = np.asarray(self.items[int(self.indices[i])])
        return torch.from_numpy(self.field_maker.to_values(item[None]))[0]


class FieldDataModule(L.LightningDataModule):
    """Train/val/test loaders of full fields on `field_maker.domain`.

    `batch_size` is the global batch: each of the world's processes loads `batch_size // world_size`. Splits are
    seeded: official train/test splits are kept and `val_fraction` of train held out; a source with a single
    split ("all") is cut into train/val/test by `val_fraction` and `test_fraction`.
    """

    def __init__(self, field_maker, name: str = "fields", batch_size: int = 64, num_workers: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, seed: int = 0, flip: bool = False, pin_memory: bool = False,
                 max_items: Optional[int] = None):
        super().__init__()
        self.field_maker, self.name = field_maker, name
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.flip, self.max_items = flip, max_items
        if flip and not (self.domain.is_grid):
            raise ValueError(f"flips are defined for Grid domains only; {self.domain.name} data needs data.flip=false")
        self.datasets: dict[str, FieldDataset] = {}

    @property
    def domain(self):
        return self.field_maker.domain

    @property
    def signal_dim(self) -> int:
        return self.field_maker.signal_dim

    @property
    def num_levels(self) -> Optional[int]:
        return self.field_maker.num_levels

    def view_names(self, split: str) -> Optional[list[str]]:
        """Names of the split's fields as its files name them (a scene's views), or None: numbered."""
        return None

    @property
    def per_device_batch_size(self) -> int:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world_size:
            raise ValueError(f"data.batch_size={self.batch_size} is the global batch and must divide by the "
                             f"world size {world_size}; pick a multiple of {world_size}")
        return self.batch_size // world_size

    def split_indices(self) -> dict[str, tuple[Sequence, np.ndarray]]:
        """Seeded (items, indices) per split name."""
        splits = self.field_maker.splits()
        rng = np.random.default_rng(self.seed)
        whole = lambda items: (items, np.arange(min(len(items), self.max_items or len(items))))  # noqa: E731
        if "train" not in splits:
            items = splits["all"]
            if len(items) < 3:  # e.g. a single NetCDF field: too few to hold any out
                log.warning("only %d field(s): train, val and test all use them", len(items))
                return dict.fromkeys(("train", "val", "test"), whole(items))
            order = rng.permutation(len(items))[: self.max_items]
            num_test = max(1, int(round(len(order) * self.test_fraction)))
            num_val = max(1, int(round(len(order) * self.val_fraction)))
            return {"test": (items, order[:num_test]), "val": (items, order[num_test:num_test + num_val]),
                    "train": (items, order[num_test + num_val:])}
        train = splits["train"]
        order = rng.permutation(len(train))[: self.max_items]
        if "val" in splits:  # an official validation split is kept as it is
            out = {"train": (train, order), "val": whole(splits["val"])}
        else:
            num_val = max(1, int(round(len(order) * self.val_fraction)))
            out = {"train": (train, order[num_val:]), "val": (train, order[:num_val])}
        out["test"] = whole(splits["test"]) if "test" in splits else out["val"]
        return out

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        for name, (items, indices) in self.split_indices().items():
            self.datasets[name] = FieldDataset(self.field_maker, items, indices)

    def _collate(self, values: list[torch.Tensor]) -> FieldBatch:
        return FieldBatch.from_values(torch.stack(values), self.domain)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.per_device_batch_size, shuffle=shuffle,
                          drop_last=shuffle, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, collate_fn=self._collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: FieldBatch, dataloader_idx: int) -> FieldBatch:
        """Random mirror along the last grid axis, vectorised on the batch's device (training only)."""
        if not (self.flip and self.trainer is not None and self.trainer.training):
            return batch
        dense = batch.to_dense()
        mirror = torch.rand(dense.shape[0], device=dense.device) < 0.5
        dense = torch.where(mirror.view(-1, *[1] * (dense.dim() - 1)), dense.flip(-1), dense)
        return FieldBatch.from_dense(dense, batch.domain)
