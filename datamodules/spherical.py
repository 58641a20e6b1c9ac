"""Images on the sphere (spherical MNIST/AFHQ, Cohen et al. 2018): inverse stereographic projection sampled on a
Driscoll-Healy grid.

Convention (s2cnn's gendata.py): the image lies on the plane tangent to the unit sphere at the south pole,
centred there, and each sphere point (x, y, z) is projected from the north pole onto that plane at
q = 2 (x, y) / (1 - z). The image covers |q_x|, |q_y| <= `scale`, its rows along +x and its columns along -y
(s2cnn uses +y, which mirrors the picture seen from outside the sphere), pixel centres as in Grid; pixels are
sampled bilinearly; points off the image, and the northern hemisphere, get value -1 (black).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.field_maker import FieldMaker
from datamodules.fields import Resolution, Sphere
from datamodules.images import unit_to_levels
from datamodules.sources.base import Source
from datamodules.sources.latlon_grid import linear_weights

DEFAULT_SCALE = 1.5  # s2cnn's gendata.py: the image spans [-1.5, 1.5] on the tangent plane
PLANE_TO_IMAGE = np.array([1.0, -1.0])  # (q_x, q_y) -> (row, column) axes, and back
CHUNK = 1024  # images per grid_sample call: bounds memory for 60k-image splits


def sphere_to_plane(xyz: np.ndarray) -> np.ndarray:
    """(..., 3) unit vectors -> (..., 2) stereographic plane points q = 2 (x, y) / (1 - z); the north pole
    (z = 1) goes to infinity."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * xyz[..., :2] / (1 - xyz[..., 2:3])


def plane_to_sphere(q: np.ndarray) -> np.ndarray:
    """(..., 2) plane points -> (..., 3) unit vectors: the inverse of `sphere_to_plane`."""
    s = (q * q).sum(-1, keepdims=True) / 4
    return np.concatenate([q / (s + 1), (s - 1) / (s + 1)], axis=-1)


class ImageSphere(FieldMaker):
    """(M, H, W, C) uint8 images -> fields on Sphere((2 bandwidth, 2 bandwidth)) (module docstring);
    to_raw projects sphere values back onto the image plane: (M, H, W, C) uint8 levels. num_levels is None:
    interpolated values are continuous, so bits/dim does not apply."""

    def __init__(self, source: Source, bandwidth: int = 16, scale: float = DEFAULT_SCALE):
        super().__init__(source)
        if source.num_levels is None:
            raise ValueError(f"ImageSphere needs a source of discrete levels; {type(source).__name__} is continuous")
        if scale <= 0:
            raise ValueError(f"scale is the image half-width on the tangent plane and must be > 0, got {scale}")
        self.bandwidth, self.scale = int(bandwidth), float(scale)
        self.image_shape = tuple(source.item_shape[:2])

    @property
    def domain(self) -> Sphere:
        return Sphere((2 * self.bandwidth,) * 2)

    @property
    def num_levels(self) -> None:
        return None  # bilinear sampling leaves the source's level grid: the values are continuous

    @cached_property
    def _sampling(self) -> tuple[torch.Tensor, np.ndarray]:
        """grid_sample grid (1, n, n, 2) of each DH point's image position, and the northern mask (n * n,)."""
        xyz = self.domain.coords().double().numpy()
        north = xyz[:, 2] > 0
        uv = sphere_to_plane(xyz) / self.scale * PLANE_TO_IMAGE  # (row, column) in the image's [-1, 1] frame
        uv[north] = 2.0  # off the image: zero padding
        n = self.domain.shape[0]
        grid = torch.from_numpy(uv[:, ::-1].copy()).float().reshape(1, n, n, 2)  # grid_sample wants (x=col, y=row)
        return grid, north

    def to_values(self, items: np.ndarray) -> np.ndarray:
        items = self._items(items)
        grid, north = self._sampling
        images = torch.from_numpy(items.astype(np.float32)).permute(0, 3, 1, 2) / (self.source.num_levels - 1)
        # sample intensities in [0, 1] so that zero padding means black, then scale to [-1, 1]
        sampled = torch.cat([F.grid_sample(chunk, grid.expand(len(chunk), -1, -1, -1), mode="bilinear",
                                           padding_mode="zeros", align_corners=False)
                             for chunk in images.split(CHUNK)])
        values = (sampled.flatten(2).transpose(1, 2) * 2 - 1).numpy()
        values[:, north] = -1.0
        return values.reshape(len(items), self.domain.num_points, self.signal_dim).astype(np.float32)

    @cached_property
    def _back_projection(self) -> tuple[np.ndarray, ...]:
        """Bilinear weights on the DH grid for every image pixel centre (colatitude clamped, longitude periodic)."""
        height, width = self.image_shape
        rows = (np.arange(height) * 2 + 1) / height - 1
        cols = (np.arange(width) * 2 + 1) / width - 1
        uv = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
        xyz = plane_to_sphere(uv * self.scale * PLANE_TO_IMAGE)
        n = self.domain.shape[0]
        colatitude = np.arccos(np.clip(xyz[:, 2], -1, 1))
        longitude = np.mod(np.arctan2(xyz[:, 1], xyz[:, 0]), 2 * np.pi)
        return (*linear_weights(colatitude * n / np.pi, n, periodic=False),
                *linear_weights(longitude * n / (2 * np.pi), n, periodic=True))

    def to_raw(self, values) -> np.ndarray:
        values = self._values(values)
        n = self.domain.shape[0]
        dense = values.reshape(len(values), n, n, self.signal_dim)
        row0, row1, row_w, col0, col1, col_w = self._back_projection
        row_w, col_w = row_w[None, :, None], col_w[None, :, None]
        image = ((dense[:, row0, col0] * (1 - col_w) + dense[:, row0, col1] * col_w) * (1 - row_w)
                 + (dense[:, row1, col0] * (1 - col_w) + dense[:, row1, col1] * col_w) * row_w)
        return unit_to_levels(image, self.source.num_levels).reshape(len(values), *self.image_shape, self.signal_dim)

    def at_resolution(self, resolution: Resolution) -> "ImageSphere":
        return ImageSphere(self.source, self.domain.at_resolution(resolution).bandwidth, self.scale)
