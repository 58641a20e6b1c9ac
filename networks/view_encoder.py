"""A small convolutional image encoder: the project's view-invariant stand-in for CLIP (trained contrastively by
lightning_modules/view_encoder.py)."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn


class ViewEncoder(nn.Module):
    """(B, 3, H, W) normalised images -> (B, embedding_dim): stride-2 3x3 convolutions with GroupNorm and SiLU,
    global average pooling, a linear map."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 128), embedding_dim: int = 128, groups: int = 8):
        super().__init__()
        layers, previous = [], 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.GroupNorm(min(groups, width), width),
                       nn.SiLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((2, 3)))
