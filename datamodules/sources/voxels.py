"""Voxel grids stored one per file (ShapeNet .binvox, or .npy occupancy arrays), read lazily."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from datamodules.sources.errors import DatasetNotFoundError
from datamodules.sources.files import FileSequence, list_files, split_dirs

MAX_HEADER_BYTES = 1024


def _binvox_header(data: bytes, path: Path) -> tuple[tuple[int, int, int], int]:
    """(dims, offset of the RLE data) of a binvox file: `#binvox 1`, `dim D H W`, `translate`, `scale`, `data`."""
    if not data.startswith(b"#binvox"):
        raise ValueError(f"{path}: bad binvox magic {data[:8]!r}; a binvox file starts with '#binvox 1'")
    end = data.find(b"\ndata\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise ValueError(f"{path}: binvox header has no 'data' line in its first {MAX_HEADER_BYTES} bytes")
    dims = None
    for line in data[:end].split(b"\n")[1:]:
        fields = line.split()
        if fields and fields[0] == b"dim":
            try:
                dims = tuple(int(v) for v in fields[1:])
            except ValueError as error:
                raise ValueError(f"{path}: bad binvox 'dim' line {line!r}") from error
    if dims is None or len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"{path}: binvox header needs a 'dim D H W' line with three positive sizes, got {dims}")
    return dims, end + len(b"\ndata\n")


def read_binvox(path: str | Path) -> np.ndarray:
    """A binvox file as a bool array indexed (x, y, z).

    The run-length data are (value, count) byte pairs over voxels ordered with y fastest, then z, then x
    (binvox's order), so the flat array reshapes to (x, z, y); we swap the last two axes to return (x, y, z),
    as binvox-rw's `fix_coords` does. In ShapeNetCore, y is up.
    """
    path = Path(path)
    data = path.read_bytes()
    dims, offset = _binvox_header(data, path)
    pairs = np.frombuffer(data, np.uint8, offset=offset)
    if len(pairs) % 2:
        raise ValueError(f"{path}: binvox run-length data has an odd number of bytes ({len(pairs)}): truncated")
    values, counts = pairs[0::2], pairs[1::2]
    if counts.sum(dtype=np.int64) != math.prod(dims):
        raise ValueError(f"{path}: binvox runs cover {counts.sum(dtype=np.int64)} voxels, dims {dims} need "
                         f"{math.prod(dims)}: truncated or corrupt")
    if values.max(initial=0) > 1:
        raise ValueError(f"{path}: binvox run values must be 0 or 1, found {values.max()}")
    return np.repeat(values.astype(bool), counts).reshape(dims).transpose(0, 2, 1)


def read_npy_voxels(path: str | Path) -> np.ndarray:
    """A 3-D occupancy array (.npy: bool/integer > 0, or float > 0.5) as bool."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from error
    if array.ndim != 3:
        raise ValueError(f"{path}: a voxel grid is a 3-D array (D, H, W), got shape {array.shape}")
    return array > 0.5 if np.issubdtype(array.dtype, np.floating) else array > 0


READERS = {".binvox": read_binvox, ".npy": read_npy_voxels}


def _item_shape(path: Path) -> tuple[int, int, int]:
    if path.suffix.lower() == ".npy":
        return tuple(np.load(path, mmap_mode="r").shape)
    with open(path, "rb") as f:
        dims, _ = _binvox_header(f.read(MAX_HEADER_BYTES), path)
    return (dims[0], dims[2], dims[1])


class VoxelFolder:
    """Every `.binvox` or `.npy` voxel grid under `root` (recursive; ShapeNet's synset/model/... layout works).
    Splits: root/{train,val,test} when root/train exists, else {"all"}. Items: (D, H, W) bool, all one shape."""

    channels = 1
    num_levels = 2

    def __init__(self, root: str | Path, suffix: str = ".binvox"):
        self.root, self.suffix = Path(root).expanduser(), suffix.lower()
        if self.suffix not in READERS:
            raise ValueError(f"suffix must be one of {sorted(READERS)}, got {suffix!r}")
        files = {name: list_files(d, [self.suffix]) for name, d in split_dirs(self.root).items()} \
            if self.root.is_dir() else {}
        if not any(files.values()):
            raise DatasetNotFoundError(
                f"voxel folder {self.root}", [self.root],
                layout=f"{self.suffix} voxel grids anywhere under the folder (e.g. ShapeNetCore's "
                       "<synset>/<model>/models/model_normalized.solid.binvox); optional train/ val/ test/ folders",
                origin="ShapeNetCore (shapenet.org) ships binvox voxelisations; GASP's voxel release "
                       "(github.com/EmilienDupont/neural-function-distributions) converted to .npy")
        self._splits = {name: FileSequence(paths, self.load) for name, paths in files.items() if paths}
        self.item_shape = _item_shape(next(iter(self._splits.values())).paths[0])

    def load(self, path: Path) -> np.ndarray:
        voxels = READERS[self.suffix](path)
        if voxels.shape != self.item_shape:
            raise ValueError(f"{path}: voxel grid {voxels.shape} differs from the folder's {self.item_shape}")
        return voxels

    def splits(self) -> dict[str, FileSequence]:
        return dict(self._splits)
