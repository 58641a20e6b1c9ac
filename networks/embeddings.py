"""Embeddings of scalars and coordinates: the DDPM sinusoidal timestep embedding and Perceiver Fourier features."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) timesteps -> (B, dim) embedding [sin(t f_i), cos(t f_i)], f_i = max_period^(-i / (half - 1)) (Ho et al.).

    Odd `dim` gets one zero column appended, as in Ho's diffusion_tf.
    """
    if dim < 4:
        raise ValueError(f"timestep_embedding needs dim >= 4 (two frequencies per phase), got dim={dim}")
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding expects timesteps of shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.float()[:, None] * freqs[None, :]
    embedding = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


class FourierFeatures(nn.Module):
    """Perceiver Fourier features of positions in [-1, 1] (HF transformers' `generate_fourier_features`).

    Per input dim d the frequencies are linspace(1, max_resolution[d] / 2, num_bands) (up to the Nyquist rate of a
    grid of max_resolution points on [-1, 1]); the output is [pos, sin(pi f pos), cos(pi f pos)] with the sin and
    cos blocks ordered dim-major, i.e. (..., D) -> (..., D * (2 * num_bands + 1)) with `concat_pos`.
    """

    def __init__(self, num_bands: int, max_resolution: Union[int, Sequence[int]], concat_pos: bool = True):
        super().__init__()
        if num_bands < 1:
            raise ValueError(f"FourierFeatures needs num_bands >= 1, got {num_bands}")
        resolutions = [max_resolution] if isinstance(max_resolution, (int, float)) else list(max_resolution)
        if not resolutions or min(resolutions) < 2:
            raise ValueError(f"FourierFeatures needs max_resolution >= 2 per dim, got {max_resolution}")
        self.num_bands = num_bands
        self.concat_pos = concat_pos
        # one row per input dim, or a single row broadcast over every dim when max_resolution is a scalar
        self.per_dim = not isinstance(max_resolution, (int, float))
        freqs = torch.stack([torch.linspace(1.0, r / 2, num_bands) for r in resolutions])
        self.register_buffer("freqs", freqs, persistent=False)

    def out_dim(self, in_dim: int) -> int:
        """Feature width for positions with `in_dim` coordinates."""
        return in_dim * (2 * self.num_bands + int(self.concat_pos))

    def forward(self, pos: Tensor) -> Tensor:
        if self.per_dim and pos.shape[-1] != self.freqs.shape[0]:
            raise ValueError(
                f"FourierFeatures was built with max_resolution for {self.freqs.shape[0]} dims, "
                f"got positions with {pos.shape[-1]} dims"
            )
        scaled = math.pi * (pos[..., :, None] * self.freqs.to(pos.dtype)).flatten(-2)
        features = [torch.sin(scaled), torch.cos(scaled)]
        return torch.cat([pos, *features] if self.concat_pos else features, dim=-1)
