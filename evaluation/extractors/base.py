"""The feature-extractor interface: uint8 images in, (N, D) features and (N, K) logits out, batched on a device.

Subclasses set `name`, `input_size`, `channels` and implement `_forward(x) -> (features, logits | None)` on float
images (B, C, H, W) in [0, 1] already resized to `input_size`; this base class validates, converts and batches.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Images = Union[np.ndarray, Tensor]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def images_to_tensor(images: Images) -> Tensor:
    """Validate uint8 images (N, H, W, C) (or (N, H, W), one channel) and return them as a uint8 tensor."""
    images = torch.as_tensor(images) if isinstance(images, np.ndarray) else images
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 in 0..255 (N, H, W, C), got {images.dtype}; convert samples in "
                        "[-1, 1] with the data's to_raw (or ((x + 1) * 127.5).round().clip(0, 255))")
    if images.dim() == 3:
        images = images.unsqueeze(-1)
    if images.dim() != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be (N, H, W, C) with C in 1, 3 (4: alpha dropped), got {tuple(images.shape)}")
    return images[..., :3]


class FeatureExtractor(ABC):
    """Embeds images with a fixed network; `name` labels every metric computed on its features."""

    name: str
    input_size: Optional[tuple[int, int]]  # (H, W) the network sees; None keeps the input size
    channels: int  # 1 (grey) or 3 (RGB) input channels of the network
    has_logits: bool = False
    fingerprint: str = ""  # identifies the weights: part of the reference-feature cache key

    def __init__(self, device: Union[str, torch.device] = "cpu", batch_size: int = 256):
        self.device, self.batch_size = torch.device(device), batch_size

    @abstractmethod
    def _forward(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """(B, C, H, W) float in [0, 1] on `self.device` -> features (B, D) and logits (B, K) or None."""

    def _prepare(self, images: Tensor) -> Tensor:
        """uint8 (B, H, W, C) -> float (B, channels, *input_size) in [0, 1] on the device."""
        x = images.to(self.device).permute(0, 3, 1, 2).float() / 255
        if self.channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size is not None and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size[-1])
        return x

    @torch.no_grad()
    def features_and_logits(self, images: Images) -> tuple[Tensor, Optional[Tensor]]:
        """Features (N, D) and logits (N, K) (None without a classifier head), float32 on CPU."""
        images = images_to_tensor(images)
        if len(images) == 0:
            raise ValueError("no images to embed")
        features, logits = [], []
        for chunk in images.split(self.batch_size):
            f, lg = self._forward(self._prepare(chunk))
            features.append(f.float().cpu())
            logits.append(None if lg is None else lg.float().cpu())
        return torch.cat(features), (None if logits[0] is None else torch.cat(logits))

    def features(self, images: Images) -> Tensor:
        return self.features_and_logits(images)[0]

    def logits(self, images: Images) -> Tensor:
        if not self.has_logits:
            raise ValueError(f"extractor '{self.name}' has no classifier head, so no logits (the Inception Score "
                             "needs them); use 'inception' or a project classifier ('digits-cnn', 'fashion-cnn')")
        return self.features_and_logits(images)[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, input_size={self.input_size}, device={self.device})"
