"""Locating and listing dataset files: the data root, split folders, and lazy per-file sequences."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from datamodules.sources.errors import DatasetNotFoundError

SPLIT_NAMES = ("train", "val", "test")


def default_data_root() -> Path:
    """Where datasets live unless a config says otherwise: $FIELDGEN_DATA_DIR, else ./data (the same default as
    the configs' `paths.data_dir`, which every data config passes to its source)."""
    return Path(os.environ.get("FIELDGEN_DATA_DIR", "data")).expanduser()


def find_data_dir(data_dir: Optional[str | Path], default_dirs: Sequence[str | Path],
                  is_dataset: Callable[[Path], bool], *, dataset: str, layout: str, origin: str,
                  data_root: Optional[str | Path] = None) -> Path:
    """The first of `data_dir` (when given, the only candidate) or `default_dirs` (relative ones under `data_root`,
    default `default_data_root()`) that holds the dataset according to `is_dataset`; else DatasetNotFoundError."""
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    if data_dir is not None:
        candidates = [Path(data_dir).expanduser()]
    else:
        candidates = [p if Path(p).is_absolute() else root / p for p in map(Path, default_dirs)]
    for candidate in candidates:
        if candidate.is_dir() and is_dataset(candidate):
            return candidate
    raise DatasetNotFoundError(dataset, candidates, layout, origin, root)


def split_dirs(root: Path, names: Iterable[str] = SPLIT_NAMES) -> dict[str, Path]:
    """The official split folders root/{train,val,test} that exist, else the whole root as {"all": root}."""
    found = {name: root / name for name in names if (root / name).is_dir()}
    return found if "train" in found else {"all": root}


def list_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files under `root` (recursive) whose suffix is one of `suffixes` (case-insensitive), sorted for a stable
    order."""
    suffixes = {s.lower() for s in suffixes}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


class FileSequence:
    """A lazy split: one file per item, read by `load(path) -> np.ndarray` on indexing."""

    def __init__(self, paths: Sequence[Path], load: Callable[[Path], np.ndarray]):
        self.paths, self.load = list(paths), load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.load(self.paths[index])  # list indexing raises IndexError past the end, so iteration stops
