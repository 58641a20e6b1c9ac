"""Voxel occupancy grids as fields on a 3-D Grid: occupancy {0, 1} -> values {-1, +1}."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.field_maker import FieldMaker
from datamodules.fields import Grid, Resolution
from datamodules.sources.base import Source

RESAMPLING = ("any", "trilinear")


def resample_voxels(voxels: np.ndarray, resolution: int, mode: str = "any", threshold: float = 0.5) -> np.ndarray:
    """(M, D, D, D) occupancy -> (M, R, R, R) bool.

    "any": a coarse voxel is occupied when any of its D/R-cube block is (max pooling; keeps thin parts; needs R
    to divide D). "trilinear": occupancy interpolated trilinearly at the new voxel centres (align_corners=False,
    so both grids cover the same cube), then `> threshold`; works for any R, up or down.
    """
    size = voxels.shape[1]
    if voxels.shape[1:] != (size,) * 3:
        raise ValueError(f"voxel grids must be cubes (M, D, D, D), got {voxels.shape}")
    if size == resolution:
        return voxels.astype(bool)
    if mode == "any":
        if size % resolution:
            raise ValueError(f"block-any downsampling needs the resolution {resolution} to divide the source's "
                             f"{size}; use downsample='trilinear'")
        k = size // resolution
        return voxels.reshape(-1, resolution, k, resolution, k, resolution, k).any(axis=(2, 4, 6))
    if mode == "trilinear":
        dense = torch.from_numpy(voxels.astype(np.float32))[:, None]
        resized = F.interpolate(dense, size=(resolution,) * 3, mode="trilinear", align_corners=False)
        return (resized[:, 0] > threshold).numpy()
    raise ValueError(f"downsample must be one of {RESAMPLING}, got {mode!r}")


class VoxelGrid(FieldMaker):
    """(M, D, D, D) occupancy -> fields on Grid((R, R, R)) with values 2 occupancy - 1, resampled from the source
    resolution by `resample_voxels(downsample, threshold)`; to_raw -> (M, R, R, R) bool (value > 0)."""

    def __init__(self, source: Source, resolution: int | None = None, downsample: str = "any",
                 threshold: float = 0.5):
        super().__init__(source)
        if downsample not in RESAMPLING:
            raise ValueError(f"downsample must be one of {RESAMPLING}, got {downsample!r}")
        self.resolution = int(resolution or source.item_shape[0])
        self.downsample, self.threshold = downsample, threshold

    @property
    def domain(self) -> Grid:
        return Grid((self.resolution,) * 3)

    @property
    def signal_dim(self) -> int:
        return 1

    def to_values(self, items: np.ndarray) -> np.ndarray:
        voxels = resample_voxels(self._items(items), self.resolution, self.downsample, self.threshold)
        return (voxels.reshape(len(voxels), -1, 1).astype(np.float32) * 2 - 1).astype(np.float32)

    def to_raw(self, values) -> np.ndarray:
        values = self._values(values)
        return (values > 0).reshape(len(values), *self.domain.shape)

    def at_resolution(self, resolution: Resolution) -> "VoxelGrid":
        shape = self.domain.resolve_shape(resolution)
        if len(set(shape)) != 1:
            raise ValueError(f"VoxelGrid resolutions are cubes, got {shape}")
        return VoxelGrid(self.source, shape[0], self.downsample, self.threshold)
