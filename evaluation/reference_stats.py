"""Reference features of a real dataset, computed once per (dataset, split, resolution, extractor) and cached.

The cache under `$FIELDGEN_CACHE_DIR/reference` holds the features (FID, KID and precision/recall need them),
the logits where the extractor has a head, and float64 mean/covariance; its sidecar records the key, the
extractor's weight fingerprint and the item count, and a mismatch or a failed sha256 check recomputes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from evaluation.cache import cache_dir, load_verified, save_verified
from evaluation.extractors.base import FeatureExtractor, Images, images_to_tensor, to_full_range
from evaluation.image_metrics import feature_statistics

log = logging.getLogger(__name__)

CACHE_VERSION = 1
Resolution = Union[int, Sequence[int], None]


def resize_images(images: Images, resolution: Resolution) -> Tensor:
    """uint8 (N, H, W, C) resized to `resolution` (int: square) with antialiased bilinear filtering; None keeps."""
    images = images_to_tensor(images)
    if resolution is None:
        return images
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(int(r) for r in resolution)
    if tuple(images.shape[1:3]) == size:
        return images
    x = F.interpolate(images.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False,
                      antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def reference_features(extractor: FeatureExtractor, dataset: str, split: str,
                       load_images: Callable[[], Images], resolution: Resolution = None,
                       max_items: Optional[int] = None, use_cache: bool = True) -> dict[str, Tensor]:
    """{"features" (N, D), "mu" (D,), "sigma" (D, D)[, "logits" (N, K)]} of the real images of one split.

    `load_images()` returns uint8 (N, H, W, C) in 0..255 and is only called on a cache miss; the first
    `max_items` images are used (all when None), resized to `resolution` before extraction.
    """
    resolution_key = None if resolution is None else (
        [resolution, resolution] if isinstance(resolution, int) else [int(r) for r in resolution])
    metadata = {"version": CACHE_VERSION, "dataset": dataset, "split": split, "resolution": resolution_key,
                "extractor": extractor.name, "fingerprint": extractor.fingerprint, "max_items": max_items}
    key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:12]
    resolution_name = "native" if resolution_key is None else "x".join(map(str, resolution_key))
    path = cache_dir("reference") / f"{dataset}-{split}-{resolution_name}-{extractor.name}-{key}.pt"
    if use_cache:
        cached = load_verified(path, metadata)
        if cached is not None:
            return cached
    images = images_to_tensor(load_images())[:max_items]
    features, logits = extractor.features_and_logits(resize_images(images, resolution))
    mu, sigma = feature_statistics(features)
    result = {"features": features, "mu": mu, "sigma": sigma}
    if logits is not None:
        result["logits"] = logits
    if use_cache:
        save_verified(result, path, metadata)
        log.info("cached %d reference features of %s/%s for %s at %s", len(features), dataset, split,
                 extractor.name, path)
    return result


def as_uint8_images(items, num_levels: Optional[int], max_items: Optional[int] = None) -> np.ndarray:
    """The first `max_items` of a source split (array or lazy sequence of (H, W, C) uint8 items with `num_levels`
    levels) as uint8 (N, H, W, C) in 0..255."""
    count = len(items) if max_items is None else min(max_items, len(items))
    array = items[:count] if isinstance(items, np.ndarray) else np.stack([np.asarray(items[i]) for i in range(count)])
    if array.dtype != np.uint8:
        raise TypeError(f"reference items must be uint8 images, got {array.dtype}: image metrics need an image "
                        "dataset")
    return to_full_range(array, num_levels or 256)
