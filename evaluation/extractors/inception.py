"""Inception-v3 features (2048-d pool3) and logits through torch-fidelity, from local weights only.

torch-fidelity imports torchvision, which does not install on the project's CPU machines, and its weights cannot
be downloaded there: this extractor exists for machines that have both, and says so clearly elsewhere.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

from evaluation.cache import cache_dir
from evaluation.extractors.base import FeatureExtractor

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release asset name
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
WEIGHTS_ENV = "FIELDGEN_INCEPTION_WEIGHTS"


def find_weights(weights_path: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """The first existing file of: `weights_path`, $FIELDGEN_INCEPTION_WEIGHTS, <cache>/weights/WEIGHTS_FILE."""
    candidates = [weights_path, os.environ.get(WEIGHTS_ENV), cache_dir("weights") / WEIGHTS_FILE]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def torch_fidelity_importable() -> bool:
    if importlib.util.find_spec("torch_fidelity") is None:
        return False
    try:
        import torch_fidelity  # noqa: F401  (imports torchvision, which may be broken)
    except Exception:
        return False
    return True


def inception_available(weights_path: Optional[Union[str, Path]] = None) -> bool:
    return find_weights(weights_path) is not None and torch_fidelity_importable()


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's FeatureExtractorInceptionV3 ("inception-v3-compat": the TF-FID network, resizing to 299
    internally); features "2048", logits "logits_unbiased" (as torch-fidelity's Inception Score)."""

    name = "inception"
    input_size = None  # torch-fidelity resizes exactly as the TF reference implementation
    channels = 3
    has_logits = True

    def __init__(self, weights_path: Optional[Union[str, Path]] = None, device: Union[str, torch.device] = "cpu",
                 batch_size: int = 64):
        super().__init__(device, batch_size)
        path = find_weights(weights_path)
        if not torch_fidelity_importable() or path is None:
            raise RuntimeError(
                "the 'inception' extractor needs torch-fidelity (which imports torchvision) and local Inception "
                f"weights ({WEIGHTS_FILE} from {WEIGHTS_URL}, passed as weights_path, ${WEIGHTS_ENV}, or put in "
                f"{cache_dir('weights')}). torch-fidelity importable: {torch_fidelity_importable()}; weights "
                f"found: {path}. Alternatives that work here: 'digits-cnn' (digits), 'fashion-cnn' "
                "(Fashion-MNIST), 'clip' (with a local CLIP directory).")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                 feature_extractor_weights_path=str(path)).to(self.device).eval()
        self.fingerprint = f"{path.resolve()}:{path.stat().st_size}"

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features, logits = self.model((x * 255).round().to(torch.uint8))  # it takes uint8 images, as given
        return features, logits
