"""3-D shape metrics: surface point clouds from voxel grids, Chamfer distance, coverage and MMD (Achlioptas 2018).

Points are in the field Grid convention: voxel centres at -1 + (2i + 1) / r per axis, so shapes lie in [-1, 1]^3
(distances are 4x those of a unit-side cube). Chamfer distance is Achlioptas' variant: the sum of the mean
squared nearest-neighbour distances both ways. An empty voxel grid (no surface at `level`) gives a cloud of NaNs
whose Chamfer distance to anything is +inf: an empty generated shape matches no reference, and an empty reference
shape is an error.
"""
from __future__ import annotations

import logging
from typing import Union

import numpy as np
import torch
from skimage.measure import marching_cubes
from torch import Tensor

log = logging.getLogger(__name__)

Seed = Union[int, np.random.Generator, None]


def surface_points(voxels: Union[np.ndarray, Tensor], num_points: int = 2048, level: float = 0.5,
                   rng: Seed = None) -> np.ndarray:
    """(num_points, 3) float32 points drawn uniformly by area from the marching-cubes surface of a (D, H, W) grid.

    `level` is the iso-value: 0.5 for occupancies in {0, 1}, 0 for field values in {-1, +1}. A grid with no
    surface at `level` returns NaNs (see the module docstring).
    """
    volume = np.asarray(torch.as_tensor(voxels).cpu(), dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"surface_points wants one (D, H, W) voxel grid, got shape {volume.shape}")
    rng = np.random.default_rng(rng)
    # pad with an outside value mirrored about `level` (0 for occupancies) so border-touching shapes close halfway
    padded = np.pad(volume, 1, constant_values=min(volume.min(), 2 * level - volume.max()))
    if not volume.max() > level:
        log.warning("voxel grid has no surface at level %s (empty shape); its points are NaN", level)
        return np.full((num_points, 3), np.nan, dtype=np.float32)
    vertices, faces, _, _ = marching_cubes(padded, level=level)
    # voxel-index units of the unpadded grid -> [-1, 1] per axis, before areas: a non-cubic grid scales its axes
    # differently, and areas measured in index units would weight the faces wrongly
    triangles = ((2 * (vertices - 1) + 1) / np.array(volume.shape, dtype=np.float64) - 1)[faces]
    edges_u, edges_v = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    areas = 0.5 * np.linalg.norm(np.cross(edges_u, edges_v), axis=1)
    chosen = rng.choice(len(faces), size=num_points, p=areas / areas.sum())
    u, v = rng.random((2, num_points, 1))
    flip = (u + v) > 1  # reflect into the triangle: uniform barycentric coordinates
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    points = triangles[chosen, 0] + u * edges_u[chosen] + v * edges_v[chosen]
    return points.astype(np.float32)


def surface_point_clouds(voxels: Union[np.ndarray, Tensor], num_points: int = 2048, level: float = 0.5,
                         seed: int = 0) -> np.ndarray:
    """(N, num_points, 3) clouds of a batch (N, D, H, W) of voxel grids, seeded per batch."""
    rng = np.random.default_rng(seed)
    return np.stack([surface_points(grid, num_points, level, rng) for grid in voxels])


def chamfer_distance(a: Union[np.ndarray, Tensor], b: Union[np.ndarray, Tensor],
                     budget: int = 1 << 26) -> Tensor:
    """(Na, Nb) pairwise Chamfer distances between clouds a (Na, P, 3) and b (Nb, Q, 3), computed in chunks of
    pairs holding about `budget` point-to-point distances at a time, on a's device."""
    a = torch.as_tensor(a, dtype=torch.float32)
    b = torch.as_tensor(b, dtype=torch.float32, device=a.device)
    if a.dim() != 3 or b.dim() != 3 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"chamfer_distance wants clouds (Na, P, D) and (Nb, Q, D), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    empty_a, empty_b = a.isnan().flatten(1).any(1), b.isnan().flatten(1).any(1)
    a, b = a.nan_to_num(0.0), b.nan_to_num(0.0)
    pairs_per_chunk = max(1, budget // (a.shape[1] * b.shape[1]))
    rows = max(1, min(len(a), pairs_per_chunk))
    cols = max(1, min(len(b), pairs_per_chunk // rows))
    sq_a, sq_b = (a * a).sum(-1), (b * b).sum(-1)
    out = torch.empty(len(a), len(b), device=a.device)
    for i in range(0, len(a), rows):
        for j in range(0, len(b), cols):
            x, y = a[i:i + rows, None], b[None, j:j + cols]  # (r, 1, P, D), (1, c, Q, D)
            dists = (sq_a[i:i + rows, None, :, None] + sq_b[None, j:j + cols, None, :]
                     - 2 * x @ y.transpose(-1, -2)).clamp(min=0)  # (r, c, P, Q) squared distances
            out[i:i + rows, j:j + cols] = dists.min(3).values.mean(2) + dists.min(2).values.mean(2)
    out[empty_a] = float("inf")
    out[:, empty_b] = float("inf")
    return out


def coverage(distances: Tensor) -> float:
    """Fraction of reference shapes (columns) that are the nearest neighbour of some generated shape (rows)."""
    valid = torch.isfinite(distances).any(1)  # an empty generated shape is nobody's neighbour
    nearest = distances[valid].argmin(1)
    return float(nearest.unique().numel() / distances.shape[1])


def minimum_matching_distance(distances: Tensor) -> float:
    """MMD: mean over reference shapes (columns) of the distance to their closest generated shape (rows)."""
    return float(distances.min(0).values.mean())


def coverage_mmd(generated: Union[np.ndarray, Tensor], reference: Union[np.ndarray, Tensor],
                 budget: int = 1 << 26) -> dict[str, float]:
    """Coverage and MMD-CD of generated clouds (Ng, P, 3) against reference clouds (Nr, P, 3)."""
    distances = chamfer_distance(generated, reference, budget)
    empty_reference = torch.isnan(torch.as_tensor(reference)).flatten(1).any(1)
    if empty_reference.any():
        raise ValueError(f"reference shapes {empty_reference.nonzero().flatten().tolist()} are empty (no surface); "
                         "remove them from the reference set or lower the iso-level")
    return {"coverage": coverage(distances), "mmd": minimum_matching_distance(distances),
            "empty_fraction": float(torch.isinf(distances).all(1).double().mean())}
