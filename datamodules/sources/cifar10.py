"""CIFAR-10 from its python batches, unpickled by an allow-list that admits numpy arrays and nothing else."""
from __future__ import annotations

import pickle
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np

from datamodules.sources.files import find_data_dir

try:  # numpy >= 2 moved the pickled array constructor to numpy._core; the real batches name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

BATCH_DIR = "cifar-10-batches-py"
SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
IMAGE_BYTES = 32 * 32 * 3


class NumpyArrayUnpickler(pickle.Unpickler):
    """Refuses every global but the three that pickled numpy arrays need, so a batch cannot run code."""

    allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # what the real batches (numpy 1.x) name
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # what numpy >= 2 writes
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: a CIFAR-10 batch holds only dicts, lists, bytes, "
                "ints and numpy arrays; this file is not one (or was tampered with)")
        return self.allowed[(module, name)]


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (M, 32, 32, 3) uint8, labels (M,) int64) of one python batch, validated."""
    try:
        with open(path, "rb") as f:
            batch = NumpyArrayUnpickler(f, encoding="bytes").load()  # the batches were pickled by Python 2
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{path}: not a readable CIFAR-10 python batch ({error})") from error
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be a uint8 array (M, {IMAGE_BYTES}), got {got}")
    if labels is None or len(labels) != len(data):
        raise ValueError(f"{path}: 'labels' must list one label per image ({len(data)})")
    # rows hold the red, green and blue 32x32 planes one after the other
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


class CIFAR10:
    """CIFAR-10: splits {"train": (50000, 32, 32, 3), "test": (10000, 32, 32, 3)} uint8; labels 0..9."""

    channels = 3
    num_levels = 256
    item_shape = (32, 32, 3)

    def __init__(self, data_dir: Optional[str | Path] = None, data_root: Optional[str | Path] = None):
        root = find_data_dir(
            data_dir, ["cifar10", "cifar-10"], lambda d: (d / BATCH_DIR / "test_batch").is_file()
            or (d / "test_batch").is_file(),
            dataset="CIFAR-10", origin="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it)",
            layout=f"{BATCH_DIR}/data_batch_1..5 and {BATCH_DIR}/test_batch (python version), or a folder "
                   "holding those files directly", data_root=data_root)
        self.root = root / BATCH_DIR if (root / BATCH_DIR).is_dir() else root

    @cached_property
    def _batches(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for split, names in SPLIT_FILES.items():
            paths = [self.root / name for name in names]
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise ValueError(f"{self.root}: CIFAR-10 {split} split misses {missing}; re-extract the archive")
            images, labels = zip(*(load_batch(p) for p in paths))
            out[split] = (np.concatenate(images), np.concatenate(labels))
        return out

    def splits(self) -> dict[str, np.ndarray]:
        return {split: images for split, (images, _) in self._batches.items()}

    def labels(self) -> dict[str, np.ndarray]:
        return {split: labels for split, (_, labels) in self._batches.items()}
