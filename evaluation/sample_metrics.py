"""Score generated images against a real dataset: the one function `experiments/evaluate.py` and the training
callback both call. Every returned key names its extractor, e.g. "fid[digits-cnn]"."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from datamodules.images import levels_to_full_range
from evaluation.extractors import FeatureExtractor, default_extractor_name, get_extractor
from evaluation.extractors.base import Images, images_to_tensor
from evaluation.image_metrics import classifier_confidence, fid, inception_score, kid, precision_recall
from evaluation.reference_stats import reference_features

METRICS = ("fid", "kid", "is", "precision_recall", "confidence")


def metric_key(metric: str, extractor: Union[FeatureExtractor, str]) -> str:
    return f"{metric}[{extractor if isinstance(extractor, str) else extractor.name}]"


def check_metrics(metrics: Sequence[str]) -> list[str]:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown image metrics {unknown or '(none given)'}; valid: {', '.join(METRICS)}")
    return list(metrics)


def score_samples(images: Images, dataset: str, metrics: Sequence[str] = ("fid",),
                  extractor: Union[FeatureExtractor, str, None] = None,
                  reference_images: Optional[Images] = None,
                  load_reference: Optional[Callable[[], Images]] = None, split: str = "train",
                  max_reference: Optional[int] = None, num_levels: int = 256,
                  kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10, k: int = 3,
                  seed: int = 0, extractor_kwargs: Optional[dict] = None) -> dict[str, float]:
    """Image metrics of generated `images` (uint8 (N, H, W, C) with `num_levels` levels, e.g. 17 for digits).

    The reference is `reference_images` (uint8 0..255, not cached), or `load_reference()` (uint8 0..255) whose
    features are cached per (dataset, split key, extractor); either must be at the samples' resolution
    (evaluation.field_scores prepares it through the DataModule). `extractor` is an instance, a name, or None for
    the dataset's default.
    """
    metrics = check_metrics(metrics)
    if extractor is None or isinstance(extractor, str):
        extractor = get_extractor(extractor or default_extractor_name(dataset), **(extractor_kwargs or {}))
    samples = torch.from_numpy(levels_to_full_range(images_to_tensor(images).cpu().numpy(), num_levels))
    sample_features, sample_logits = extractor.features_and_logits(samples)
    out: dict[str, float] = {}
    if "is" in metrics:
        mean, std = inception_score(extractor.logits(samples) if sample_logits is None else sample_logits,
                                    splits=min(is_splits, len(samples)))
        out[metric_key("is", extractor)], out[metric_key("is_std", extractor)] = mean, std
    if "confidence" in metrics:  # share of samples the classifier is sure of, and the rarest class's share
        for name, value in classifier_confidence(
                extractor.logits(samples) if sample_logits is None else sample_logits).items():
            out[metric_key(name, extractor)] = value
    if set(metrics) - {"is", "confidence"}:
        real = _reference(extractor, dataset, split, reference_images, load_reference, max_reference)
        if "fid" in metrics:
            out[metric_key("fid", extractor)] = fid(real, sample_features)
        if "kid" in metrics:
            mean, std = kid(real, sample_features, kid_subsets, kid_subset_size, seed=seed)
            out[metric_key("kid", extractor)], out[metric_key("kid_std", extractor)] = mean, std
        if "precision_recall" in metrics:
            for name, value in precision_recall(real, sample_features, k).items():
                out[metric_key(name, extractor)] = value
    return out


def _reference(extractor: FeatureExtractor, dataset: str, split: str, reference_images: Optional[Images],
               load_reference: Optional[Callable[[], Images]],
               max_reference: Optional[int]) -> Tensor:
    if reference_images is not None:
        return extractor.features(images_to_tensor(reference_images)[:max_reference])
    if load_reference is None:
        raise ValueError("FID, KID and precision/recall need real images: pass reference_images or load_reference")
    return reference_features(extractor, dataset, split, load_reference, max_reference)["features"]
