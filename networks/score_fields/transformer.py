"""Transformer-encoder score field of DPF's architecture ablation (Sect. D, Table 8).

Context tokens -> linear to dim -> pre-LN transformer encoder -> latents; "the resulting latents are concatenated
with the corresponding query pairs and fed to a linear projection layer". Context token i is paired with query
token i, so context and query must be the same points in the same order. Cost is quadratic in the point count.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from networks.score_fields.tokens import PairedScoreField


class TransformerEncoderField(PairedScoreField):
    """DPF score field over paired context/query points: (B, N, ...) -> predicted noise (B, N, out_dim)."""

    def __init__(self, coord_dim: int, signal_dim: int, out_dim: Optional[int] = None, *, dim: int = 512,
                 depth: int = 12, heads: int = 4, mlp_ratio: int = 1, dropout: float = 0.0, **tokens):
        if dim % heads:
            raise ValueError(f"TransformerEncoderField needs dim ({dim}) divisible by heads ({heads})")
        super().__init__(coord_dim, signal_dim, out_dim, dim=dim, **tokens)
        encoder_layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=mlp_ratio * dim, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        # nested tensors only serve padding masks, which fields never have
        self.encoder = nn.TransformerEncoder(
            encoder_layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )

    def encode(self, context: Tensor) -> Tensor:
        return self.encoder(context)
