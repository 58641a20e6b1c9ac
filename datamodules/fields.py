"""The field contract: a field is a set of (coordinate, signal) pairs on a domain.

Every DataModule emits `FieldBatch`es of full fields; every method reads them. A `Domain` knows its metric space
and its canonical discretisation, lists coordinates at any resolution (the basis of resolution-free sampling) and
converts full-field values to a dense tensor (B, C, *shape) and back.

Coordinate conventions:
- `Grid`: pixel/voxel centres in [-1, 1] per axis, ordered like the array axes (row, col) or (depth, row, col);
  a resolution r puts the centres at -1 + (2i + 1) / r, so grids of any resolution cover the same square.
- `Sphere`: Driscoll-Healy grid of n x n points, colatitude theta_j = pi j / n, longitude phi_k = 2 pi k / n
  (j, k = 0..n-1, n = 2 * bandwidth), as unit vectors (x, y, z) = (sin th cos ph, sin th sin ph, cos th).
- `LatLon`: h x w grid, latitude from +90 to -90 degrees inclusive, longitude 360 k / w degrees, as unit vectors.
- `Rays`: one pinhole view of H x W pixels; a point is the ray of a pixel, (origin xyz, direction xyz) in world
  units (datamodules/cameras.py: the official NeRF convention, directions with unit camera depth). The canonical
  coordinates are those of the camera at the origin looking down -z; a batch of posed views carries its own.
Values are float32 in [-1, 1] (each source documents its scaling). Points are flattened row-major.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

Resolution = Union[int, Sequence[int], None]

# every kind of domain a method can declare (Capabilities.domains), with the name tables and errors show
DOMAIN_KINDS = {"grid2d": "grid 2-D (images)", "grid3d": "grid 3-D (voxels)", "sphere": "sphere (Driscoll-Healy)",
                "latlon": "lat-lon", "rays": "rays (posed views)"}


class Domain:
    """A metric space with a canonical discretisation `shape` (see module docstring)."""

    name: str = "domain"
    coord_dim: int = 0
    is_grid: bool = False  # a regular Euclidean grid: what grid-only methods (DDPM, LMConv) accept

    shape: tuple[int, ...]

    @property
    def kind(self) -> str:
        """The key of DOMAIN_KINDS this domain is: what methods declare they accept."""
        return self.name

    @property
    def num_points(self) -> int:
        return math.prod(self.shape)

    def resolve_shape(self, resolution: Resolution) -> tuple[int, ...]:
        """The discretisation shape at `resolution` (int: every axis; sequence: per axis; None: canonical)."""
        if resolution is None:
            return tuple(self.shape)
        if isinstance(resolution, int):
            return (resolution,) * len(self.shape)
        shape = tuple(int(r) for r in resolution)
        if len(shape) != len(self.shape):
            raise ValueError(f"{self.name} resolution needs {len(self.shape)} sizes, got {list(shape)}")
        return shape

    def at_resolution(self, resolution: Resolution) -> "Domain":
        """The same domain discretised at another resolution."""
        return replace(self, shape=self.resolve_shape(resolution))

    def coords(self, resolution: Resolution = None) -> Tensor:
        """(N, coord_dim) float32 coordinates of the discretisation at `resolution`, flattened row-major."""
        raise NotImplementedError

    def to_dense(self, values: Tensor, resolution: Resolution = None) -> Tensor:
        """(B, N, C) values of a full field -> (B, C, *shape)."""
        shape = self.resolve_shape(resolution)
        batch, num_points, channels = values.shape
        if num_points != math.prod(shape):
            raise ValueError(
                f"to_dense needs a full field of {math.prod(shape)} points on {self.name}{list(shape)}, "
                f"got {num_points}; pass the resolution the values were generated at"
            )
        return values.transpose(1, 2).reshape(batch, channels, *shape)

    def from_dense(self, dense: Tensor) -> Tensor:
        """(B, C, *shape) -> (B, N, C) values in the row-major point order of `coords`."""
        return dense.flatten(2).transpose(1, 2)

    def spec(self) -> dict:
        """A Hydra-instantiable description, stored in checkpoints."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "shape": list(self.shape)}


@dataclass(frozen=True)
class Grid(Domain):
    """A regular 2-D (H, W) or 3-D (D, H, W) grid over [-1, 1]^d."""

    shape: tuple[int, ...] = (32, 32)
    name: str = field(default="grid", init=False)
    is_grid: bool = field(default=True, init=False)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) not in (2, 3) or min(self.shape) < 1:
            raise ValueError(f"Grid shape must be 2-D (H, W) or 3-D (D, H, W) with positive sizes, got {self.shape}")

    @property
    def coord_dim(self) -> int:
        return len(self.shape)

    @property
    def kind(self) -> str:
        return f"grid{len(self.shape)}d"

    def coords(self, resolution: Resolution = None) -> Tensor:
        axes = [(torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1 for n in self.resolve_shape(resolution)]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack(mesh, dim=-1).reshape(-1, len(axes)).float()

    def interpolate(self, dense: Tensor, coords: Tensor) -> Tensor:
        """Dense fields (B, C, *shape) read at any points coords (B, N, coord_dim) in [-1, 1]: (B, N, C) by
        (bi/tri)linear interpolation between the grid's centres, edge values beyond the outermost ones."""
        if dense.shape[2:] != self.shape or coords.shape[-1] != self.coord_dim:
            raise ValueError(f"interpolate needs dense (B, C, {', '.join(map(str, self.shape))}) and coords "
                             f"(B, N, {self.coord_dim}); got {tuple(dense.shape)} and {tuple(coords.shape)}")
        # grid_sample's align_corners=False puts sample i at -1 + (2i + 1) / n: the centres of `coords`
        sample_at = coords.flip(-1).reshape(coords.shape[0], *[1] * (self.coord_dim - 1), coords.shape[1],
                                            self.coord_dim)
        values = torch.nn.functional.grid_sample(dense, sample_at.to(dense.dtype), mode="bilinear",
                                                 padding_mode="border", align_corners=False)
        return values.reshape(dense.shape[0], dense.shape[1], coords.shape[1]).transpose(1, 2)


def _unit_vectors(colatitude: Tensor, longitude: Tensor) -> Tensor:
    """Meshgrid of colatitudes x longitudes (radians, float64) -> (h * w, 3) float32 unit vectors."""
    theta, phi = torch.meshgrid(colatitude, longitude, indexing="ij")
    xyz = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1)
    return xyz.reshape(-1, 3).float()


@dataclass(frozen=True)
class Sphere(Domain):
    """S^2 sampled on an n x n Driscoll-Healy grid (n = 2 * bandwidth); coordinates are unit vectors."""

    shape: tuple[int, ...] = (32, 32)
    name: str = field(default="sphere", init=False)
    coord_dim: int = field(default=3, init=False)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 2 or self.shape[0] != self.shape[1] or self.shape[0] % 2:
            raise ValueError(f"a Driscoll-Healy grid is n x n with n = 2 * bandwidth (even), got {self.shape}")

    @property
    def bandwidth(self) -> int:
        return self.shape[0] // 2

    def colatitudes(self, resolution: Resolution = None) -> Tensor:
        n = self.resolve_shape(resolution)[0]
        return torch.arange(n, dtype=torch.float64) * math.pi / n

    def longitudes(self, resolution: Resolution = None) -> Tensor:
        n = self.resolve_shape(resolution)[1]
        return torch.arange(n, dtype=torch.float64) * 2 * math.pi / n

    def coords(self, resolution: Resolution = None) -> Tensor:
        return _unit_vectors(self.colatitudes(resolution), self.longitudes(resolution))


@dataclass(frozen=True)
class LatLon(Domain):
    """An h x w latitude-longitude grid (latitude +90..-90 inclusive); coordinates are unit vectors."""

    shape: tuple[int, ...] = (46, 90)
    name: str = field(default="latlon", init=False)
    coord_dim: int = field(default=3, init=False)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 2 or self.shape[0] < 2:
            raise ValueError(f"LatLon shape is (h >= 2, w), got {self.shape}")

    def latitudes(self, resolution: Resolution = None) -> Tensor:
        """Degrees, north to south."""
        return torch.linspace(90.0, -90.0, self.resolve_shape(resolution)[0], dtype=torch.float64)

    def longitudes(self, resolution: Resolution = None) -> Tensor:
        """Degrees east, from 0."""
        w = self.resolve_shape(resolution)[1]
        return torch.arange(w, dtype=torch.float64) * 360.0 / w

    def coords(self, resolution: Resolution = None) -> Tensor:
        colatitude = torch.deg2rad(90.0 - self.latitudes(resolution))
        return _unit_vectors(colatitude, torch.deg2rad(self.longitudes(resolution)))


@dataclass(frozen=True)
class Rays(Domain):
    """The rays of a pinhole view of shape (H, W) with focal length `focal` (pixels), for a scene between the
    camera depths `near` and `far` (directions have unit camera depth, so these are z-depths, as NeRF's)."""

    shape: tuple[int, ...] = (64, 64)
    focal: float = 64.0
    near: float = 2.0
    far: float = 6.0
    name: str = field(default="rays", init=False)
    coord_dim: int = field(default=6, init=False)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"Rays shape is one view's (H, W), got {self.shape}")
        if not self.focal > 0:
            raise ValueError(f"Rays focal length must be positive (pixels), got {self.focal}")
        if not 0 <= self.near < self.far:
            raise ValueError(f"Rays need 0 <= near < far, got near={self.near}, far={self.far}; fix the data "
                             "config's near / far (Blender-synthetic scenes: 2 and 6)")

    def at_resolution(self, resolution: Resolution) -> "Rays":
        """The same camera (field of view) with another pixel count; the aspect ratio must stay."""
        shape = self.resolve_shape(resolution)
        if shape[0] * self.shape[1] != shape[1] * self.shape[0]:
            raise ValueError(f"a view of {list(self.shape)} keeps its aspect ratio at another resolution, got "
                             f"{list(shape)}")
        return replace(self, shape=shape, focal=self.focal * shape[1] / self.shape[1])

    def coords(self, resolution: Resolution = None) -> Tensor:
        from datamodules.cameras import rays_from_poses  # cameras builds on this module's conventions

        domain = self.at_resolution(resolution)
        return rays_from_poses(torch.eye(4).unsqueeze(0), domain)[0]

    def centre_crop(self, fraction: float) -> Tensor:
        """Indices of the central crop of the view (fraction of each side), NeRF's early-training pre-crop."""
        if not 0 < fraction <= 1:
            raise ValueError(f"a centre crop is a fraction in (0, 1] of each side, got {fraction}")
        height, width = self.shape
        half_h, half_w = int(height // 2 * fraction), int(width // 2 * fraction)  # as the official code
        rows = torch.arange(height // 2 - half_h, height // 2 + half_h)
        cols = torch.arange(width // 2 - half_w, width // 2 + half_w)
        return (rows[:, None] * width + cols[None, :]).reshape(-1)

    def spec(self) -> dict:
        return {**super().spec(), "focal": float(self.focal), "near": float(self.near), "far": float(self.far)}


def gather_points(x: Tensor, index: Tensor) -> Tensor:
    """Per-field points: x (B, N, C) at index (B, M) -> (B, M, C)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@functools.lru_cache(maxsize=16)
def canonical_coords(domain: Domain) -> Tensor:
    """`domain.coords()`, computed once per domain (domains are frozen, hence hashable); do not modify in place."""
    return domain.coords()


@dataclass
class FieldBatch:
    """A batch of fields: `coords` (B, N, Dm), `values` (B, N, Dy), optional `index` (B, N) into the domain's
    canonical discretisation (set when the points are a subset), and the `domain`."""

    coords: Tensor
    values: Tensor
    domain: Domain
    index: Optional[Tensor] = None

    def __post_init__(self):
        if self.coords.dim() != 3 or self.values.dim() != 3:
            raise ValueError(f"FieldBatch wants coords (B, N, Dm) and values (B, N, Dy), got "
                             f"{tuple(self.coords.shape)} and {tuple(self.values.shape)}")
        if self.coords.shape[:2] != self.values.shape[:2]:
            raise ValueError(f"coords {tuple(self.coords.shape)} and values {tuple(self.values.shape)} "
                             "disagree on (B, N)")
        if self.coords.shape[-1] != self.domain.coord_dim:
            raise ValueError(f"{self.domain.name} coordinates have {self.domain.coord_dim} dims, "
                             f"got {self.coords.shape[-1]}")

    @classmethod
    def from_values(cls, values: Tensor, domain: Domain) -> "FieldBatch":
        """A batch of full fields on the canonical discretisation; coords are shared (an expanded view)."""
        coords = canonical_coords(domain).to(values.device).expand(values.shape[0], -1, -1)
        return cls(coords=coords, values=values, domain=domain)

    @classmethod
    def from_dense(cls, dense: Tensor, domain: Domain) -> "FieldBatch":
        return cls.from_values(domain.from_dense(dense), domain)

    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    @property
    def num_points(self) -> int:
        return self.values.shape[1]

    @property
    def signal_dim(self) -> int:
        return self.values.shape[2]

    @property
    def is_full(self) -> bool:
        return self.index is None and self.num_points == self.domain.num_points

    def to_dense(self) -> Tensor:
        """(B, C, *shape) of a full field."""
        if not self.is_full:
            raise ValueError("to_dense needs the full field; this batch holds a subset of points")
        return self.domain.to_dense(self.values)

    def subset(self, index: Tensor) -> "FieldBatch":
        """The points `index` (B, M) of each field, gathered; `index` is composed with any existing one."""
        base = index if self.index is None else torch.gather(self.index, 1, index)
        return FieldBatch(coords=gather_points(self.coords, index), values=gather_points(self.values, index),
                          domain=self.domain, index=base)

    def to(self, device) -> "FieldBatch":
        index = None if self.index is None else self.index.to(device)
        return FieldBatch(self.coords.to(device), self.values.to(device), self.domain, index)
