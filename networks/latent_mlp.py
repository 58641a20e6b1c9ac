"""DiffAE's latent denoiser (Preechakul et al. 2022, MLPSkipNet), which ∞-Diff's headline runs use unchanged for
their latent DDPM: every layer after the first reads [h, z_t]; hidden layers are Linear -> x (1 + Linear(t emb))
-> LayerNorm -> GELU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.embeddings import timestep_embedding


class MLPSkipNet(nn.Module):
    """eps_theta(z_t, t) for latents (B, latent_dim): num_layers Linear layers (num_layers - 1 hidden of width
    `hidden`, then the output), the input skipped into every layer after the first, the sinusoidal time embedding
    (time_channels) through an MLP scaling each hidden layer."""

    def __init__(self, latent_dim: int, num_layers: int = 10, hidden: int = 2048, time_channels: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"method.net.num_layers={num_layers}: MLPSkipNet needs at least 2 layers")
        self.time_channels = time_channels
        self.time_embed = nn.Sequential(nn.Linear(time_channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.hidden = nn.ModuleList([nn.Linear(latent_dim if i == 0 else hidden + latent_dim, hidden)
                                     for i in range(num_layers - 1)])
        self.time_scales = nn.ModuleList([nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden))
                                          for _ in range(num_layers - 1)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(num_layers - 1)])
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + latent_dim, latent_dim)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """z (B, latent_dim), t (B,) -> (B, latent_dim)."""
        emb = self.time_embed(timestep_embedding(t, self.time_channels).to(z.dtype))
        h = z
        for i, (layer, scale, norm) in enumerate(zip(self.hidden, self.time_scales, self.norms)):
            h = layer(h if i == 0 else torch.cat([h, z], dim=-1))
            h = self.dropout(F.gelu(norm(h * (1 + scale(emb)))))
        return self.out(torch.cat([h, z], dim=-1))
