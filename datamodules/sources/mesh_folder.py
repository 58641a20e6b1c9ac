"""Any folder of trimesh-loadable meshes, each normalised to the unit cube, centred, and voxelised (filled)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from datamodules.sources.errors import DatasetNotFoundError
from datamodules.sources.files import FileSequence, list_files, split_dirs

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")


def voxelize_in_cube(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """(R, R, R) bool occupancy, interior filled, of a mesh given in fieldgen's [-1, 1]^3 Grid frame (voxel i
    centred at -1 + (2i + 1) / R); axes follow the mesh's (x, y, z); parts outside the cube are dropped."""
    if mesh.is_empty or not np.all(np.isfinite(mesh.bounds)):
        raise ValueError("cannot voxelise an empty mesh")
    # index space: voxel centres at the integers 0..R-1, where trimesh's voxel grid of pitch 1 puts them too
    indexed = mesh.copy()
    indexed.apply_translation(np.ones(3))
    indexed.apply_scale(resolution / 2)
    indexed.apply_translation(np.full(3, -0.5))
    index = np.round(indexed.voxelized(pitch=1.0).fill().points).astype(np.int64)
    index = index[((index >= 0) & (index < resolution)).all(1)]
    voxels = np.zeros((resolution,) * 3, bool)
    voxels[index[:, 0], index[:, 1], index[:, 2]] = True
    return voxels


def voxelize_mesh(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """`voxelize_in_cube` of `mesh` centred and scaled so its longest bounding-box side spans the outermost
    voxel centres (-1 + 1/R .. 1 - 1/R)."""
    if mesh.is_empty or not np.all(np.isfinite(mesh.bounds)):
        raise ValueError("cannot voxelise an empty mesh")
    lower, upper = mesh.bounds
    normalized = mesh.copy()
    normalized.apply_translation(-(lower + upper) / 2)
    normalized.apply_scale(2 * (resolution - 1) / resolution / max(float((upper - lower).max()), 1e-12))
    return voxelize_in_cube(normalized, resolution)


class MeshFolder:
    """Every mesh under `root` (recursive: .obj .off .ply .stl .glb .gltf), voxelised on reading at
    `resolution`. Splits: root/{train,val,test} when root/train exists, else {"all"}."""

    channels = 1
    num_levels = 2

    def __init__(self, root: str | Path, resolution: int = 32):
        self.root, self.resolution = Path(root).expanduser(), int(resolution)
        files = {name: list_files(d, MESH_SUFFIXES) for name, d in split_dirs(self.root).items()} \
            if self.root.is_dir() else {}
        if not any(files.values()):
            raise DatasetNotFoundError(
                f"mesh folder {self.root}", [self.root], origin="any mesh collection (ShapeNet, ModelNet, Thingi10K)",
                layout=f"mesh files ({', '.join(MESH_SUFFIXES)}) anywhere under the folder; optional train/ val/ "
                       "test/ folders")
        self._splits = {name: FileSequence(paths, self.load) for name, paths in files.items() if paths}

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return (self.resolution,) * 3

    def load(self, path: Path) -> np.ndarray:
        try:
            mesh = trimesh.load(path, force="mesh")
            return voxelize_mesh(mesh, self.resolution)
        except Exception as error:  # trimesh raises assorted types on malformed files; name the file
            raise ValueError(f"{path}: not a loadable mesh ({type(error).__name__}: {error})") from error

    def splits(self) -> dict[str, FileSequence]:
        return dict(self._splits)
