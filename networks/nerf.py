"""NeRF's field network (Mildenhall et al. 2020, as the DietNeRF code): positional encoding and the MLP with a skip
connection and a view-direction branch."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class PositionalEncoding(nn.Module):
    """x -> (x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x)): the official code's, without pi."""

    def __init__(self, num_frequencies: int, input_dim: int = 3):
        super().__init__()
        self.num_frequencies, self.input_dim = num_frequencies, input_dim
        self.register_buffer("frequencies", 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
                             persistent=False)

    @property
    def output_dim(self) -> int:
        return self.input_dim * (1 + 2 * self.num_frequencies)

    def forward(self, x: Tensor) -> Tensor:
        scaled = x[..., None, :] * self.frequencies[:, None]  # (..., L, d)
        bands = torch.stack([scaled.sin(), scaled.cos()], dim=-2).flatten(-3)  # per frequency: sin then cos
        return torch.cat([x, bands], dim=-1)


class NeRFMLP(nn.Module):
    """(points, view directions) -> (rgb logits, raw density). `depth` layers of `width` on the encoded point, the
    encoded point concatenated again after each layer in `skips`; with `use_viewdirs` the density comes from the
    trunk and the colour from a width/2 layer on (trunk feature, encoded direction), else both from the trunk."""

    def __init__(self, position_frequencies: int = 10, direction_frequencies: int = 4, depth: int = 8,
                 width: int = 256, skips: Sequence[int] = (4,), use_viewdirs: bool = True):
        super().__init__()
        if depth < 1 or width < 2 or any(not 0 <= s < depth - 1 for s in skips):
            raise ValueError(f"NeRF MLP needs depth >= 1, width >= 2 and skips within 0..depth-2; got depth={depth}, "
                             f"width={width}, skips={list(skips)}")
        self.position_encoding = PositionalEncoding(position_frequencies)
        self.direction_encoding = PositionalEncoding(direction_frequencies)
        self.skips, self.use_viewdirs = tuple(skips), use_viewdirs
        points = self.position_encoding.output_dim
        self.trunk = nn.ModuleList([nn.Linear(points, width)] + [
            nn.Linear(width + (points if i in self.skips else 0), width) for i in range(depth - 1)])
        if use_viewdirs:
            self.density = nn.Linear(width, 1)
            self.feature = nn.Linear(width, width)
            self.view = nn.Linear(width + self.direction_encoding.output_dim, width // 2)
            self.colour = nn.Linear(width // 2, 3)
        else:
            self.output = nn.Linear(width, 4)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The DietNeRF code's DenseLayer initialisation: Xavier-uniform weights, zero biases."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, points: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        """points (..., 3), unit directions (..., 3) -> rgb logits (..., 3), raw density (..., 1)."""
        encoded = self.position_encoding(points)
        h = encoded
        for i, layer in enumerate(self.trunk):
            h = torch.relu(layer(h))
            if i in self.skips:
                h = torch.cat([encoded, h], dim=-1)
        if not self.use_viewdirs:
            out = self.output(h)
            return out[..., :3], out[..., 3:]
        view = torch.relu(self.view(torch.cat([self.feature(h), self.direction_encoding(directions)], dim=-1)))
        return self.colour(view), self.density(h)
