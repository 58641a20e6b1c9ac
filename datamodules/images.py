"""Images as fields on a 2-D Grid: levels 0..L-1 scaled to [-1, 1] as x / (L - 1) * 2 - 1, and fields back to
uint8 images (stored as 0..255 on the data's level grid: 255 l / (L - 1), rounded)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from datamodules.field_maker import FieldMaker
from datamodules.fields import Domain, Grid, Resolution
from datamodules.sources.base import Source
from datamodules.sources.imaging import resample_filter, resize_images


def levels_to_unit(levels: np.ndarray, num_levels: int) -> np.ndarray:
    """Integer levels 0..L-1 -> float32 in [-1, 1]."""
    return (levels.astype(np.float32) * (2.0 / (num_levels - 1)) - 1.0).astype(np.float32)


def unit_to_levels(values: np.ndarray, num_levels: int) -> np.ndarray:
    """Values in [-1, 1] (clipped) -> the nearest level 0..L-1, uint8: the one quantiser of field values."""
    levels = np.rint((np.clip(values, -1.0, 1.0) + 1.0) * ((num_levels - 1) / 2.0))
    return levels.astype(np.uint8)


def levels_to_full_range(levels: np.ndarray, num_levels: int) -> np.ndarray:
    """uint8 levels 0..L-1 -> uint8 0..255 (255 l / (L - 1), rounded): how images of L levels are stored."""
    levels = np.asarray(levels)
    if levels.max(initial=0) >= num_levels:
        raise ValueError(f"images reach level {levels.max()} but num_levels={num_levels}; if they are already "
                         "0..255 pass num_levels=256")
    if num_levels == 256:
        return levels.astype(np.uint8)
    return np.rint(levels.astype(np.float64) * 255 / (num_levels - 1)).astype(np.uint8)


def full_range_to_levels(images: np.ndarray, num_levels: int, name: str = "images") -> np.ndarray:
    """The inverse of levels_to_full_range, refusing pixels that are not on the L-level grid (they would change)."""
    images = np.asarray(images)
    levels = np.rint(images.astype(np.float64) * (num_levels - 1) / 255).astype(np.uint8)
    off = levels_to_full_range(levels, num_levels) != images
    if off.any():
        raise ValueError(f"{name}: {int(off.sum())} pixels (e.g. value {int(images[off][0])}) are not on the "
                         f"{num_levels}-level grid of the data (0..255 in steps of 255/{num_levels - 1}); write "
                         "them with the data's levels, as sample.py's samples.npz does")
    return levels


def to_images(values: torch.Tensor, domain: Domain, num_levels: Optional[int] = None) -> np.ndarray:
    """uint8 (N, H, W, C) in 0..255 of 2-D grid fields with values in [-1, 1], quantised to the data's
    `num_levels` (None: 256)."""
    levels = num_levels or 256
    dense = domain.to_dense(torch.as_tensor(values)).permute(0, 2, 3, 1).cpu().numpy()
    return levels_to_full_range(unit_to_levels(dense, levels), levels)


def images_to_values(images: np.ndarray, domain: Domain, channels: int, num_levels: Optional[int] = None,
                     name: str = "images") -> torch.Tensor:
    """The inverse of to_images, exact: (N, H, W, C) uint8 on the data's level grid -> (N, P, C) values."""
    images = np.asarray(images)
    if images.ndim == 3 and channels == 1:
        images = images[..., None]
    expected = (*domain.shape, channels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected or not len(images):
        raise ValueError(f"{name} must hold uint8 images (N, {', '.join(map(str, expected))}) for this model or "
                         f"data, got {images.dtype} {images.shape}")
    levels = num_levels or 256
    dense = levels_to_unit(full_range_to_levels(images, levels, name), levels)
    return domain.from_dense(torch.from_numpy(dense).permute(0, 3, 1, 2))


class ImageGrid(FieldMaker):
    """(M, H, W, C) uint8 images -> fields on Grid((h, w)); `resolution` (int or (h, w), None: the source's)
    resizes with PIL (`resample`) only when it differs from the source's size; `num_levels` (None: the source's)
    re-quantises the L_src source levels into that many equal-width bins, level floor(l L / L_src), after any
    resize (2 binarises at the midpoint; 32 of 256 keeps the top 5 bits). to_raw -> (M, h, w, C) uint8 levels."""

    def __init__(self, source: Source, resolution: Resolution = None, resample: str = "lanczos",
                 num_levels: Optional[int] = None):
        super().__init__(source)
        if source.num_levels is None:
            raise ValueError(f"ImageGrid needs a source of discrete levels; {type(source).__name__} is continuous")
        if num_levels is not None and not 2 <= num_levels <= source.num_levels:
            raise ValueError(f"num_levels={num_levels} re-quantises {type(source).__name__}'s {source.num_levels} "
                             f"levels: it must be in 2..{source.num_levels} (null keeps them)")
        self.resample, self.levels = resample, num_levels or source.num_levels
        resample_filter(resample)  # fail at construction on a bad name
        self.shape = Grid(tuple(source.item_shape[:2])).resolve_shape(resolution)

    @property
    def domain(self) -> Grid:
        return Grid(self.shape)

    @property
    def num_levels(self) -> int:
        return self.levels

    def to_values(self, items: np.ndarray) -> np.ndarray:
        images = resize_images(self._items(items), self.shape, self.resample)
        source_levels = self.source.num_levels
        images = np.minimum(images, source_levels - 1)  # resampling filters overshoot past a 17-level top
        if self.levels != source_levels:
            images = (images.astype(np.int64) * self.levels) // source_levels
        return levels_to_unit(images, self.levels).reshape(len(images), -1, self.signal_dim)

    def to_raw(self, values) -> np.ndarray:
        values = self._values(values)
        return unit_to_levels(values, self.num_levels).reshape(len(values), *self.shape, self.signal_dim)

    def at_resolution(self, resolution: Resolution) -> "ImageGrid":
        return ImageGrid(self.source, self.domain.resolve_shape(resolution), self.resample, self.levels)
