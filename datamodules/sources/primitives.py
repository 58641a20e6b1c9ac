"""Procedural primitive shapes (sphere, box, torus, capsule, cylinder), randomly sized, rotated and placed.

Occupancy is evaluated from each primitive's exact inside test at the voxel centres, vectorised over shapes:
trimesh's voxelize-and-fill costs ~40 ms a shape here, 10 s for 256 shapes; `mesh(split, i)` builds the same
shape with trimesh (for surface metrics and as the tests' cross-check).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

KINDS = ("sphere", "box", "torus", "capsule", "cylinder")
MARGIN = 0.95  # every shape stays inside [-MARGIN, MARGIN]^3 of the [-1, 1]^3 grid
SHAPE_CHUNK = 32  # shapes per vectorised occupancy step: bounds memory at 32 * R^3 * 3 floats


@dataclass(frozen=True)
class PrimitiveParams:
    """Per shape: `kind` index into KINDS, local `size` (meaning per kind, see `_inside`), `rotation` (3, 3)
    local-to-world, `translation` (3,). A world point p is in shape i when its local point
    (p - translation) @ rotation passes the kind's inside test."""

    kind: np.ndarray
    size: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray


def sample_params(num_shapes: int, kinds: Sequence[str], rng: np.random.Generator) -> PrimitiveParams:
    """Random shapes whose circumscribed radius lies in [0.3, 0.7], placed wholly inside the margin."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    kind = rng.choice([KINDS.index(k) for k in kinds], size=num_shapes)
    radius = rng.uniform(0.3, 0.7, num_shapes)
    u = rng.uniform(0.3, 1.0, (num_shapes, 3))
    fraction = rng.uniform(0.2, 0.45, num_shapes)
    angle = rng.uniform(0.35, 1.2, num_shapes)
    # sizes per kind, each with circumscribed radius `radius`
    size = np.select(
        [kind[:, None] == KINDS.index(k) for k in KINDS],
        [np.stack([radius, radius, radius], 1),                                          # sphere: r
         radius[:, None] * u / np.linalg.norm(u, axis=1, keepdims=True),                 # box: half-extents
         np.stack([radius * (1 - fraction), radius * fraction, radius], 1),             # torus: R, r
         np.stack([radius * fraction * 1.2, radius * (1 - fraction * 1.2), radius], 1),  # capsule: r, half-length
         np.stack([radius * np.sin(angle), radius * np.cos(angle), radius], 1)])        # cylinder: r, half-height
    rotation = Rotation.random(num_shapes, random_state=rng).as_matrix()
    reach = (MARGIN - radius)[:, None]
    translation = rng.uniform(-1.0, 1.0, (num_shapes, 3)) * reach
    return PrimitiveParams(kind, size, rotation, translation)


def _inside(kind: int, local: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Inside test of `local` points (n, P, 3) for n shapes of one kind with sizes (n, 3)."""
    x, y, z = local[..., 0], local[..., 1], local[..., 2]
    a, b = size[:, 0, None], size[:, 1, None]
    name = KINDS[kind]
    if name == "sphere":
        return x * x + y * y + z * z <= a * a
    if name == "box":
        return (np.abs(local) <= size[:, None, :]).all(-1)
    if name == "torus":  # around the z axis
        return (np.sqrt(x * x + y * y) - a) ** 2 + z * z <= b * b
    if name == "capsule":  # segment along z of half-length b, radius a
        return x * x + y * y + (z - np.clip(z, -b, b)) ** 2 <= a * a
    return (x * x + y * y <= a * a) & (np.abs(z) <= b)  # cylinder along z


def occupancy(params: PrimitiveParams, resolution: int) -> np.ndarray:
    """(n, R, R, R) bool occupancy of the shapes at the voxel centres -1 + (2i + 1) / R (fieldgen's Grid)."""
    axis = ((np.arange(resolution) * 2 + 1) / resolution - 1).astype(np.float32)
    centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    voxels = np.zeros((len(params.kind), len(centres)), bool)
    for kind in np.unique(params.kind):  # a handful of kinds, each vectorised over its shapes and points
        members = np.flatnonzero(params.kind == kind)
        for chunk in np.array_split(members, -(-len(members) // SHAPE_CHUNK)):
            rotation = params.rotation[chunk].astype(np.float32)
            shift = np.einsum("nj,njk->nk", params.translation[chunk].astype(np.float32), rotation)
            local = np.einsum("pj,njk->npk", centres, rotation) - shift[:, None, :]
            voxels[chunk] = _inside(int(kind), local, params.size[chunk].astype(np.float32))
    return voxels.reshape(-1, resolution, resolution, resolution)


def primitive_mesh(params: PrimitiveParams, index: int) -> trimesh.Trimesh:
    """The trimesh surface of shape `index`, in the same [-1, 1]^3 world frame as `occupancy`."""
    name, size = KINDS[params.kind[index]], params.size[index]
    if name == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=size[0])
    elif name == "box":
        mesh = trimesh.creation.box(extents=2 * size)
    elif name == "torus":
        mesh = trimesh.creation.torus(major_radius=size[0], minor_radius=size[1])
    elif name == "capsule":
        mesh = trimesh.creation.capsule(height=2 * size[1], radius=size[0])
    else:
        mesh = trimesh.creation.cylinder(radius=size[0], height=2 * size[1])
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = params.rotation[index], params.translation[index]
    return mesh.apply_transform(transform)


class Primitives:
    """`num_train` + `num_test` seeded random primitives at `resolution`^3: splits {"train", "test"} of
    (M, R, R, R) bool, generated in memory on first use (nothing cached on disk)."""

    channels = 1
    num_levels = 2

    def __init__(self, num_train: int = 256, num_test: int = 64, resolution: int = 32, seed: int = 0,
                 kinds: Sequence[str] = KINDS):
        self.resolution = int(resolution)
        train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self.params = {"train": sample_params(num_train, kinds, train_rng)}
        if num_test:
            self.params["test"] = sample_params(num_test, kinds, test_rng)

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return (self.resolution,) * 3

    @cached_property
    def _voxels(self) -> dict[str, np.ndarray]:
        return {split: occupancy(params, self.resolution) for split, params in self.params.items()}

    def splits(self) -> dict[str, np.ndarray]:
        return dict(self._voxels)

    def mesh(self, split: str, index: int) -> trimesh.Trimesh:
        return primitive_mesh(self.params[split], index)
