"""Lat-lon grids of physical values (ERA5 temperature, NetCDF fields) as fields on LatLon, min-max scaled."""
from __future__ import annotations

from functools import cached_property
from typing import Optional, Sequence

import numpy as np

from datamodules.field_maker import FieldMaker
from datamodules.fields import LatLon, Resolution
from datamodules.sources.base import Source

Bound = Optional[float | Sequence[float]]


class LatLonGrid(FieldMaker):
    """(M, h, w, C) float32 physical values -> fields on LatLon((h, w)) scaled per channel to
    2 (x - minimum) / (maximum - minimum) - 1, and back in to_raw.

    `minimum` / `maximum` (a float or one per channel) default to the min / max of split `stats_split` (falling
    back to "all"), computed on first use. Values outside them (e.g. test data beyond the train range) map
    slightly outside [-1, 1] rather than being clipped, so that to_raw inverts to_values exactly.
    """

    def __init__(self, source: Source, minimum: Bound = None, maximum: Bound = None, stats_split: str = "train",
                 shape: Optional[Sequence[int]] = None):
        super().__init__(source)
        if (minimum is None) != (maximum is None):
            raise ValueError("give both minimum and maximum, or neither (then they come from the data)")
        self._given = None if minimum is None else (self._per_channel(minimum), self._per_channel(maximum))
        self.stats_split = stats_split
        self.shape = tuple(shape) if shape is not None else None  # set by at_resolution: decode-only resolutions

    def _per_channel(self, bound) -> np.ndarray:
        bound = np.broadcast_to(np.asarray(bound, np.float64), (self.signal_dim,))
        return bound.copy()

    @property
    def domain(self) -> LatLon:
        return LatLon(self.shape or tuple(self.source.item_shape[:2]))

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(minimum, maximum) per channel, float64."""
        if self._given is not None:
            minimum, maximum = self._given
        else:
            splits = self.source.splits()
            split = self.stats_split if self.stats_split in splits else "all"
            if split not in splits:
                raise ValueError(f"no split {self.stats_split!r} (nor 'all') to take min/max from; splits: "
                                 f"{sorted(splits)}; pass minimum and maximum")
            # a lazy split item by item, so that it is never held whole
            chunks = [splits[split]] if isinstance(splits[split], np.ndarray) else splits[split]
            minimum, maximum = np.full(self.signal_dim, np.inf), np.full(self.signal_dim, -np.inf)
            for chunk in chunks:
                flat = np.asarray(chunk, np.float64).reshape(-1, self.signal_dim)
                minimum, maximum = np.minimum(minimum, flat.min(0)), np.maximum(maximum, flat.max(0))
        if np.any(maximum <= minimum):
            raise ValueError(f"maximum {maximum} must exceed minimum {minimum} in every channel")
        return np.asarray(minimum, np.float64), np.asarray(maximum, np.float64)

    def to_values(self, items: np.ndarray) -> np.ndarray:
        items = self._items(items)
        if self.shape is not None and self.shape != tuple(items.shape[1:3]):
            raise ValueError(f"this LatLonGrid decodes fields at {self.shape}; it cannot encode {items.shape[1:3]} "
                             "items (lat-lon data are not resampled)")
        minimum, maximum = self.bounds
        values = 2 * (items.astype(np.float64) - minimum) / (maximum - minimum) - 1
        return values.reshape(len(items), -1, self.signal_dim).astype(np.float32)

    def to_raw(self, values) -> np.ndarray:
        values = self._values(values).astype(np.float64)
        minimum, maximum = self.bounds
        raw = (values + 1) / 2 * (maximum - minimum) + minimum
        return raw.reshape(len(values), *self.domain.shape, self.signal_dim).astype(np.float32)

    def at_resolution(self, resolution: Resolution) -> "LatLonGrid":
        minimum, maximum = self.bounds
        return LatLonGrid(self.source, minimum.tolist(), maximum.tolist(), self.stats_split,
                          shape=self.domain.resolve_shape(resolution))
