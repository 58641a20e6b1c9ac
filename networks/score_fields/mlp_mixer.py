"""MLP-mixer score field of DPF's architecture ablation (Sect. D, Table 8).

Context tokens -> linear to dim -> MLP-mixer blocks (Tolstikhin et al.: token-mixing MLP across the points, then
channel-mixing MLP, both pre-LN residual) -> latents, concatenated with the corresponding query tokens and fed to
a linear head. Token mixing has weights over a fixed `num_points`, so every field must have exactly that many
points, with context = query (same points, same order).
"""
from __future__ import annotations

from typing import Optional

from einops.layers.torch import Rearrange
from torch import Tensor, nn

from networks.score_fields.tokens import PairedScoreField


def mlp(dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
    )


class MixerBlock(nn.Module):
    """x + TokenMLP(LN(x) over the point axis), then x + ChannelMLP(LN(x))."""

    def __init__(self, num_points: int, dim: int, token_mlp_dim: int, channel_mlp_dim: int, dropout: float):
        super().__init__()
        self.token_mixing = nn.Sequential(
            nn.LayerNorm(dim),
            Rearrange("b n c -> b c n"),
            mlp(num_points, token_mlp_dim, dropout),
            Rearrange("b c n -> b n c"),
        )
        self.channel_mixing = nn.Sequential(nn.LayerNorm(dim), mlp(dim, channel_mlp_dim, dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.token_mixing(x)
        return x + self.channel_mixing(x)


class MLPMixerField(PairedScoreField):
    """DPF score field over num_points paired context/query points -> predicted noise (B, num_points, out_dim)."""

    def __init__(self, coord_dim: int, signal_dim: int, out_dim: Optional[int] = None, *, num_points: int,
                 token_mlp_dim: int, channel_mlp_dim: int, dim: int = 512, depth: int = 12, dropout: float = 0.0,
                 **tokens):
        if min(num_points, token_mlp_dim, channel_mlp_dim, dim, depth) < 1:
            raise ValueError("MLPMixerField needs num_points, token_mlp_dim, channel_mlp_dim, dim and depth >= 1")
        super().__init__(coord_dim, signal_dim, out_dim, dim=dim, **tokens)
        self.num_points = num_points
        self.blocks = nn.Sequential(
            *(MixerBlock(num_points, dim, token_mlp_dim, channel_mlp_dim, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)

    def encode(self, context: Tensor) -> Tensor:
        if context.shape[1] != self.num_points:
            raise ValueError(
                f"the MLP-mixer needs a fixed point count: this one was built with num_points={self.num_points} "
                f"but got {context.shape[1]} points. Sample exactly {self.num_points} points (context = query) "
                f"or rebuild it with num_points={context.shape[1]}"
            )
        return self.norm(self.blocks(context))
