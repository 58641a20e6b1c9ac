"""Reference features of a real dataset, computed once per (dataset, split key, extractor) and cached.

The cache under `$FIELDGEN_CACHE_DIR/reference` holds the features (FID, KID and precision/recall need them),
the logits where the extractor has a head, and float64 mean/covariance; its sidecar records the key, the
extractor's weight fingerprint and the item count, and a mismatch or a failed sha256 check recomputes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Callable, Optional

from torch import Tensor

from evaluation.cache import cache_dir, load_verified, save_verified
from evaluation.extractors.base import FeatureExtractor, Images, images_to_tensor
from evaluation.image_metrics import feature_statistics

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: split keys name the field maker and indices; no resizing here


def reference_features(extractor: FeatureExtractor, dataset: str, split: str,
                       load_images: Callable[[], Images], max_items: Optional[int] = None,
                       use_cache: bool = True) -> dict[str, Tensor]:
    """{"features" (N, D), "mu" (D,), "sigma" (D, D)[, "logits" (N, K)]} of the real images of one split.

    `load_images()` returns uint8 (N, H, W, C) in 0..255, already as the model's data are (see
    evaluation.field_scores), and is only called on a cache miss; the first `max_items` images are used (all when
    None). `split` must name exactly which images those are (field_scores' keys hash the split's indices and the
    field maker's settings).
    """
    metadata = {"version": CACHE_VERSION, "dataset": dataset, "split": split, "extractor": extractor.name,
                "fingerprint": extractor.fingerprint, "max_items": max_items}
    key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir("reference") / f"{dataset}-{split}-{extractor.name}-{key}.pt"
    if use_cache:
        cached = load_verified(path, metadata)
        if cached is not None:
            return cached
    images = images_to_tensor(load_images())[:max_items]
    features, logits = extractor.features_and_logits(images)
    mu, sigma = feature_statistics(features)
    result = {"features": features, "mu": mu, "sigma": sigma}
    if logits is not None:
        result["logits"] = logits
    if use_cache:
        save_verified(result, path, metadata)
        log.info("cached %d reference features of %s/%s for %s at %s", len(features), dataset, split,
                 extractor.name, path)
    return result
