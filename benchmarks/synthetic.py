"""Random items of an absent dataset's shape, so that a benchmark of its experiment runs on the same domain."""
from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Optional, Sequence

import numpy as np
from hydra.utils import get_class


class SyntheticSource:
    """A source of `count` uniformly random train items (and one val, one test item) of `item_shape`: uint8 levels
    below `num_levels` (bool when 2), standard normal float32 for continuous data (num_levels None)."""

    def __init__(self, item_shape: Sequence[int], channels: int, num_levels: Optional[int], count: int,
                 seed: int = 0):
        self.item_shape, self.channels, self.num_levels = tuple(item_shape), channels, num_levels
        self.count, self.seed = count, seed

    def _items(self, count: int, rng: np.random.Generator) -> np.ndarray:
        shape = (count, *self.item_shape)
        if self.num_levels is None:
            return rng.standard_normal(shape, dtype=np.float32)
        if self.num_levels == 2:
            return rng.random(shape) < 0.5
        return rng.integers(0, self.num_levels, shape, dtype=np.uint8)

    def splits(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return {"train": self._items(self.count, rng), "val": self._items(1, rng), "test": self._items(1, rng)}


def declared(source_cls: type, name: str, options: dict):
    """A source's attribute known without its files: a class attribute, or a property computed from its options
    alone (an image folder's item_shape from its resolution); None when only its files tell."""
    value = inspect.getattr_static(source_cls, name, None)
    if isinstance(value, property):
        try:
            return value.fget(SimpleNamespace(**options))
        except AttributeError:  # it reads something __init__ derives from the files
            return None
    return None if callable(value) or isinstance(value, (classmethod, staticmethod)) else value


def synthetic_source_config(source_cfg: dict, count: int, item_shape: Optional[Sequence[int]],
                            reason: str) -> dict:
    """The config of a SyntheticSource standing in for `source_cfg` (a `_target_` dict whose data is absent)."""
    source_cls = get_class(source_cfg["_target_"])
    options = {key: value for key, value in source_cfg.items() if not key.startswith("_")}
    shape = item_shape or declared(source_cls, "item_shape", options)
    channels = declared(source_cls, "channels", options)
    if shape is None or channels is None:
        raise ValueError(
            f"the data of {source_cfg['_target_']} is absent ({reason.splitlines()[0]}) and its item shape (or "
            f"channels) comes from its files, so no synthetic stand-in can be made: set benchmark.synthetic_item_shape=[...] (one "
            f"item's shape as the source reads it, e.g. [46,90,1] for ERA5) or put the data under paths.data_dir")
    return {"_target_": f"{__name__}.SyntheticSource", "item_shape": list(shape), "channels": channels,
            "num_levels": inspect.getattr_static(source_cls, "num_levels", None), "count": count}
