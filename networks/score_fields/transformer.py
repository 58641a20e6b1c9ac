"""Transformer-encoder score field of DPF's architecture ablation (Sect. D, Table 8).

Context tokens -> linear to dim -> pre-LN transformer encoder -> latents; "the resulting latents are concatenated
with the corresponding query pairs and fed to a linear projection layer". Context token i is paired with query
token i, so context and query must be the same points in the same order. Cost is quadratic in the point count.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from networks.score_fields.tokens import FieldTokenizer, check_paired


class TransformerEncoderField(nn.Module):
    """DPF score field over paired context/query points: (B, N, ...) -> predicted noise (B, N, out_dim)."""

    def __init__(
        self,
        coord_dim: int,
        signal_dim: int,
        out_dim: Optional[int] = None,
        coord_bands: int = 10,
        coord_max_resolution: int = 64,
        time_bands: int = 64,
        num_timesteps: int = 1000,
        *,
        dim: int = 512,
        depth: int = 12,
        heads: int = 4,
        mlp_ratio: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"TransformerEncoderField needs dim ({dim}) divisible by heads ({heads})")
        self.tokenizer = FieldTokenizer(
            coord_dim, signal_dim, coord_bands, coord_max_resolution, time_bands, num_timesteps
        )
        self.coord_dim = coord_dim
        self.signal_dim = signal_dim
        self.out_dim = out_dim or signal_dim
        token_dim = self.tokenizer.out_dim
        self.input_proj = nn.Linear(token_dim, dim)
        encoder_layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=mlp_ratio * dim, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        # nested tensors only serve padding masks, which fields never have
        self.encoder = nn.TransformerEncoder(
            encoder_layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.head = nn.Linear(dim + token_dim, self.out_dim)

    def forward(
        self,
        context_coords: Tensor,
        context_values: Tensor,
        query_coords: Tensor,
        query_values: Tensor,
        t: Tensor,
    ) -> Tensor:
        self.tokenizer.check(context_coords, context_values, t, "context")
        self.tokenizer.check(query_coords, query_values, t, "query")
        check_paired(context_coords, query_coords, "TransformerEncoderField")
        latents = self.encoder(self.input_proj(self.tokenizer(context_coords, context_values, t)))
        queries = self.tokenizer(query_coords, query_values, t)
        return self.head(torch.cat([latents, queries], dim=-1))
