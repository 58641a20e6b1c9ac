"""The field-maker interface the DataModule uses: a raw source plus the map between its items and field values."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

import numpy as np

from datamodules.fields import Domain, Resolution
from datamodules.sources.base import Source


class FieldMaker(ABC):
    """Wraps a source; `to_values` turns a batch of raw items into full fields (M, N, signal_dim) float32 in
    [-1, 1] on `domain` (points in the order of `domain.coords()`), `to_raw` maps values back to the item
    layout for saving samples."""

    def __init__(self, source: Source):
        self.source = source

    @property
    @abstractmethod
    def domain(self) -> Domain:
        ...

    @property
    def signal_dim(self) -> int:
        return self.source.channels

    @property
    def num_levels(self) -> Optional[int]:
        return self.source.num_levels

    def splits(self) -> dict[str, Sequence]:
        return self.source.splits()

    @abstractmethod
    def to_values(self, items: np.ndarray) -> np.ndarray:
        ...

    @abstractmethod
    def to_raw(self, values: np.ndarray) -> np.ndarray:
        ...

    @abstractmethod
    def at_resolution(self, resolution: Resolution) -> "FieldMaker":
        """The same maker emitting (and decoding) fields on `domain.at_resolution(resolution)`."""

    def _items(self, items: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """A raw batch as an array (M, *source.item_shape), or a ValueError naming the expected shape."""
        items = np.asarray(items)
        if items.shape[1:] != tuple(self.source.item_shape):
            raise ValueError(f"{type(self).__name__}.to_values wants a batch of items (M, "
                             f"{', '.join(map(str, self.source.item_shape))}), got {items.shape}")
        return items

    def _values(self, values, num_points: Optional[int] = None) -> np.ndarray:
        """Field values (M, N, signal_dim) as float32 numpy (torch tensors accepted), shape checked."""
        values = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32)
        num_points = self.domain.num_points if num_points is None else num_points
        if values.ndim != 3 or values.shape[1:] != (num_points, self.signal_dim):
            raise ValueError(f"{type(self).__name__}.to_raw wants full fields (M, {num_points}, {self.signal_dim}) "
                             f"on {self.domain.name}{list(self.domain.shape)}, got {values.shape}")
        return values
