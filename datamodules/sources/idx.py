"""MNIST and Fashion-MNIST from their IDX files (gzipped or not), with magic numbers and sizes checked."""
from __future__ import annotations

import gzip
import math
import struct
from functools import cached_property
from pathlib import Path
from typing import Optional

import numpy as np

from datamodules.sources.files import find_data_dir

IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


def read_idx(path: Path, expected_magic: Optional[int] = None) -> np.ndarray:
    """An IDX file as an array. Magic = 0x0000 | dtype code | number of dims; then big-endian uint32 sizes."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: unreadable IDX file ({error}); re-download it") from error
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{path}: bad IDX magic number {data[:4].hex()}; expected 0000 <dtype code> <ndim>")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: IDX magic number {magic:#010x}, expected {expected_magic:#010x}")
    ndim, dtype = data[3], IDX_DTYPES[data[2]]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX header says {dims} ({expected} bytes of data) but the file holds "
                         f"{len(data) - header}: truncated or corrupt; re-download it")
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def _idx_path(root: Path, stem: str) -> Optional[Path]:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


class IDXImages:
    """28x28 grey images in IDX files `{train,t10k}-images-idx3-ubyte[.gz]` (labels `...-labels-idx1-ubyte`
    optional) in one folder; splits {"train", "test"} as (M, 28, 28, 1) uint8."""

    channels = 1
    num_levels = 256
    item_shape = (28, 28, 1)
    dataset = "IDX images"
    default_dirs: tuple[str, ...] = ()
    origin = ""

    def __init__(self, data_dir: Optional[str | Path] = None, data_root: Optional[str | Path] = None):
        self.root = find_data_dir(
            data_dir, self.default_dirs, lambda d: _idx_path(d, "train-images-idx3-ubyte") is not None,
            dataset=self.dataset, origin=self.origin,
            layout="a folder with train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz (and optionally "
                   "train-labels-idx1-ubyte.gz, t10k-labels-idx1-ubyte.gz), gzipped or not", data_root=data_root)

    @cached_property
    def _images(self) -> dict[str, np.ndarray]:
        out = {}
        for split, prefix in SPLIT_PREFIXES.items():
            path = _idx_path(self.root, f"{prefix}-images-idx3-ubyte")
            if path is not None:
                images = read_idx(path, expected_magic=0x00000803)
                if images.shape[1:] != self.item_shape[:2]:
                    raise ValueError(f"{path}: images are {images.shape[1:]}, expected {self.item_shape[:2]}")
                out[split] = images[..., None]
        return out

    def splits(self) -> dict[str, np.ndarray]:
        return dict(self._images)

    def labels(self) -> dict[str, np.ndarray]:
        """int64 labels of the splits whose label file is present (sizes checked against the images)."""
        out = {}
        for split, prefix in SPLIT_PREFIXES.items():
            path = _idx_path(self.root, f"{prefix}-labels-idx1-ubyte")
            if path is None or split not in self._images:
                continue
            labels = read_idx(path, expected_magic=0x00000801)
            if len(labels) != len(self._images[split]):
                raise ValueError(f"{path}: {len(labels)} labels for {len(self._images[split])} images")
            out[split] = labels.astype(np.int64)
        return out


class MNIST(IDXImages):
    dataset = "MNIST"
    default_dirs = ("mnist", "MNIST/raw")
    origin = "https://yann.lecun.com/exdb/mnist/ (or any mirror of the four IDX gz files)"


class FashionMNIST(IDXImages):
    dataset = "Fashion-MNIST"
    default_dirs = ("fashion-mnist", "FashionMNIST/raw", "/usr/share/datasets/fashion-mnist")
    origin = ("Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist); "
              "or https://github.com/zalandoresearch/fashion-mnist (data/fashion)")
