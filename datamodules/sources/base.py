"""What every raw source offers (a structural type: sources need not inherit from it)."""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np


class Source(Protocol):
    """A raw dataset reader.

    `channels`: signal channels per point; `num_levels`: discrete levels per channel value (256 for 8-bit
    images, 17 for sklearn digits, 2 for occupancy) or None for continuous data; `item_shape`: the shape of one
    item: images (H, W, C) uint8, lat-lon (h, w, C) float32 in physical units, voxels (D, H, W) bool.
    `splits()` maps split names ("train", "val", "test" where official, else "all") to an array batch
    (M, *item_shape) or a lazy sequence of items.
    """

    channels: int
    num_levels: Optional[int]
    item_shape: tuple[int, ...]

    def splits(self) -> dict[str, Sequence[np.ndarray]]:
        ...
