"""Scores of generated fields against the real fields the model trained on: the one path that `evaluate.py` and the
training-time metric callback share.

The reference is a split of the DataModule passed through its own field maker (crop, resize with its resampling,
levels) at the samples' resolution, and quantised with the samples' quantiser: what is compared is what the model
was trained to produce. Reference features are cached under a key of the dataset, the split's indices and every
setting of the field maker and its source (`fingerprint`), so another seed, folder or transform recomputes them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.images import levels_to_full_range, to_images
from datamodules.spherical import ImageSphere
from evaluation.geometry import coverage_mmd, surface_point_clouds
from evaluation.sample_metrics import METRICS as IMAGE_METRICS, score_samples

CHUNK = 1024  # reference items converted at a time


def describe(obj: Any, depth: int = 0) -> Any:
    """A JSON-able description of an object's public settings (a field maker and its source), arrays by hash."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()[:16]
    if isinstance(obj, (list, tuple)):
        return [describe(item, depth + 1) for item in obj]
    if isinstance(obj, dict):
        return {str(key): describe(value, depth + 1) for key, value in obj.items()}
    if hasattr(obj, "__dict__") and depth < 4:
        settings = {name: describe(value, depth + 1) for name, value in vars(obj).items() if not name.startswith("_")}
        return {"type": f"{type(obj).__module__}.{type(obj).__qualname__}", **settings}
    return type(obj).__qualname__


def fingerprint(datamodule, field_maker, indices: np.ndarray) -> str:
    """A short key of what a reference set is: dataset, split indices and every setting of the field maker."""
    record = {"dataset": datamodule.name, "maker": describe(field_maker),
              "indices": hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]


def reference_values(datamodule, split: str, max_items: Optional[int], resolution=None):
    """(field maker at `resolution`, a loader of the split's first `max_items` fields (M, P, C) through it, their
    count, the cache key)."""
    maker = datamodule.field_maker
    if resolution is not None and tuple(resolution) != tuple(maker.domain.shape):
        maker = maker.at_resolution(tuple(resolution))  # the DataModule's own resampling, from the source items
    items, indices = datamodule.split_indices()[split]
    indices = np.asarray(indices)[:max_items]

    def load() -> np.ndarray:
        chunks = (indices[start:start + CHUNK] for start in range(0, len(indices), CHUNK))
        return np.concatenate([maker.to_values(np.stack([np.asarray(items[int(i)]) for i in chunk]))
                               for chunk in chunks])

    return maker, load, len(indices), f"{split}-{fingerprint(datamodule, maker, indices)}"


def scored_images(values, domain, maker) -> np.ndarray:
    """uint8 (N, H, W, C) 0..255 images that image metrics see: 2-D grid fields as images on the data's levels;
    sphere fields of projected images (ImageSphere) back-projected onto the image plane, where the image's
    classifier reads them."""
    if domain.kind == "grid2d":
        return to_images(values, domain, maker.num_levels)
    if isinstance(maker, ImageSphere):
        return levels_to_full_range(maker.to_raw(values), maker.source.num_levels)
    raise ValueError(f"image metrics score 2-D images or sphere fields of projected images (ImageSphere), not "
                     f"{domain.kind} fields made by {type(maker).__name__}")


def score_generated(values: torch.Tensor, domain, datamodule, metrics: Sequence[str], *, reference_split: str = "train",
                    max_reference: Optional[int] = None, extractor=None, extractor_kwargs: Optional[dict] = None,
                    kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10, pr_k: int = 3,
                    seed: int = 0, upsample_to: Optional[int] = None, surface_points: int = 2048) -> dict[str, float]:
    """Image metrics of 2-D fields `values` (N, P, C) on `domain` (or of projected images on the sphere, read back
    on the image plane) against `reference_split`, and coverage / MMD of 3-D occupancy fields against the test split
    (DPF Table 3: in the paper's unit-cube coordinates)."""
    out: dict[str, float] = {}
    image_metrics = [m for m in metrics if m in IMAGE_METRICS]
    if image_metrics:
        maker, load, count, key = reference_values(datamodule, reference_split, max_reference, domain.shape)
        out.update(score_samples(
            scored_images(values, domain, maker), datamodule.name, image_metrics, extractor,
            load_reference=lambda: scored_images(load(), maker.domain, maker), split=key, num_levels=256,
            kid_subsets=kid_subsets, kid_subset_size=min(kid_subset_size, len(values), count),
            is_splits=min(is_splits, len(values)), k=pr_k, seed=seed, extractor_kwargs=extractor_kwargs))
    if "coverage_mmd" in metrics:
        maker, load, _, _ = reference_values(datamodule, "test", max_reference, domain.shape)
        generated, real = domain.to_dense(values.float()), maker.domain.to_dense(torch.from_numpy(load()))
        if upsample_to:  # DPF Table 3: 32^3 fields upsampled trilinearly to 64^3, then meshed; both sets alike
            generated, real = (F.interpolate(x, size=(upsample_to,) * 3, mode="trilinear", align_corners=False)
                               for x in (generated, real))
        clouds = [(surface_point_clouds((x[:, 0] > 0).numpy(), surface_points, seed=seed + i) + 1) / 2
                  for i, x in enumerate((generated, real))]  # [-1, 1]^3 -> the unit cube
        scores = coverage_mmd(*clouds)
        out.update({"coverage[chamfer]": scores["coverage"], "mmd[chamfer,unit-cube]": scores["mmd"],
                    "empty_fraction": scores["empty_fraction"]})
    return out
