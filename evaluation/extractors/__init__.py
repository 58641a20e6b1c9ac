"""Feature extractors by name, and the default extractor of each dataset."""
from __future__ import annotations

from typing import Optional

from evaluation.extractors.base import FeatureExtractor, images_to_tensor
from evaluation.extractors.classifier import CLASSIFIERS, ClassifierExtractor
from evaluation.extractors.clip import CLIPExtractor
from evaluation.extractors.inception import InceptionExtractor, inception_available

EXTRACTORS = ("inception", "clip", *CLASSIFIERS)
DATASET_CLASSIFIERS = {spec.dataset: name for name, spec in CLASSIFIERS.items()}

__all__ = ["FeatureExtractor", "EXTRACTORS", "get_extractor", "default_extractor_name", "images_to_tensor",
           "ClassifierExtractor", "CLIPExtractor", "InceptionExtractor"]


def get_extractor(name: str, **kwargs) -> FeatureExtractor:
    """An extractor by name: "inception" (weights_path=...), "clip" (model_dir=...), or a project classifier
    ("digits-cnn", "fashion-cnn"; data_dir=..., spec overrides). Common kwargs: device, batch_size."""
    if name in CLASSIFIERS:
        return ClassifierExtractor(name, **kwargs)
    if name == "inception":
        return InceptionExtractor(**kwargs)
    if name == "clip":
        return CLIPExtractor(**kwargs)
    raise ValueError(f"unknown feature extractor '{name}'; valid names: {', '.join(EXTRACTORS)}")


def default_extractor_name(dataset: str, inception_weights: Optional[str] = None) -> str:
    """The project classifier of `dataset` when it has one, else Inception when it is usable here. sphere_X holds
    X's images projected onto the sphere: X's classifier scores their back-projection."""
    if dataset.removeprefix("sphere_") in DATASET_CLASSIFIERS:
        return DATASET_CLASSIFIERS[dataset.removeprefix("sphere_")]
    if inception_available(inception_weights):
        return "inception"
    classifiers = ", ".join(f"{d}: {n}" for d, n in DATASET_CLASSIFIERS.items())
    raise ValueError(
        f"dataset '{dataset}' has no project classifier ({classifiers}) "
        "and Inception is unusable here (needs torch-fidelity and local weights); choose an extractor explicitly: "
        "'clip' with a local CLIP directory, or 'inception' on a machine with torch-fidelity and its weights")
