"""PerceiverIO score field eps_theta(C_t, t, Q_t) of DPF (Zhuang et al. 2023, Sect. B, Fig. 11).

Encoder: a learned latent array; each of num_blocks unshared blocks is one cross-attention (latents <- context
tokens) and self_attends_per_block self-attention layers, all pre-LN with residuals and an MLP (Perceiver-style:
the latents re-read the context in every block). Decoder: the query tokens are projected linearly to the decoder
width (= latent_dim), then num_decoder_blocks cross-attention layers (queries <- latents) and LayerNorm + linear
head. The projection (rather than HF's first decoder layer without a query residual) keeps a residual path from
each query's own noisy value to its output, which eps-prediction needs. Queries never attend to each other, so
each output depends only on its own query and the context; the output is invariant to the context order.

Parameter count (2-D coords, RGB, 173-wide tokens with geometric time bands; qk/v channels default to the query
stream's width) against the paper's Table 6, pinned in tests/networks/test_perceiver_io.py:
    base (512 x 512 latents, 12 blocks x 2 SA, 4 dec)  59.32M  vs 62.4M  (-4.9%)
    latents 256                                       59.18M  vs 62.3M  (-5.0%)
    latent dim 256                                    15.50M  vs 22.8M  (-32.0%)
    decoder blocks 2                                  56.16M  vs 59.7M  (-5.9%)
    blocks 6                                          32.99M  vs 35.4M  (-6.8%)
    self-attends per block 1                          40.38M  vs 43.5M  (-7.2%)
dpf.md Sect. 2.4 derives from the table's deltas ~1.578M per self-attention layer (d=512, widening 1: matched
exactly here), no weight sharing, 512 x 512 latents, 4 decoder blocks and ~1.35M per cross-attention block, which
is more than 173-wide tokens give (1.23M here). HF's "kv" cross-attention (qk/v width = token width D) matches
1.35M per encoder and decoder block at D ~ 433 and then fits all six rows within 8% (latent dim 256: -6%), so the
authors' tokens were wider than the stated recipe; at d=256 the d-independent mass of such wide tokens is what our
count lacks. The tokens here follow the paper's stated recipe.

Initialisation (init): "hf" is HF Perceiver's (the code the paper modified): the latents and every Linear weight
N(0, initializer_range), biases zero. "lucidrains" (perceiver-pytorch): N(0, 1) latents, nn.Linear's default.
"mixed" (this module's first version, kept for the ablation): N(0, initializer_range) latents with nn.Linear's
default, under which the first cross-attention adds one vector ~15x the latents' scale to every latent, so the
latent array collapses into one vector and the decoder's attention over it becomes uniform.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from networks.score_fields.tokens import ScoreField

INITS = ("hf", "lucidrains", "mixed")


class Attention(nn.Module):
    """Multi-head attention with pre-LN on the query stream (and on the key/value stream when it is another set)."""

    def __init__(
        self,
        q_dim: int,
        kv_dim: Optional[int],
        num_heads: int,
        qk_channels: Optional[int],
        v_channels: Optional[int],
        dropout: float,
    ):
        super().__init__()
        qk_channels = qk_channels or q_dim
        v_channels = v_channels or qk_channels
        if qk_channels % num_heads or v_channels % num_heads:
            raise ValueError(
                f"attention with {num_heads} heads needs qk_channels ({qk_channels}) and v_channels ({v_channels}) "
                f"divisible by the number of heads"
            )
        self.is_cross = kv_dim is not None
        kv_dim = kv_dim if self.is_cross else q_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm_q = nn.LayerNorm(q_dim)
        self.norm_kv = nn.LayerNorm(kv_dim) if self.is_cross else nn.Identity()
        self.to_q = nn.Linear(q_dim, qk_channels)
        self.to_k = nn.Linear(kv_dim, qk_channels)
        self.to_v = nn.Linear(kv_dim, v_channels)
        self.to_out = nn.Linear(v_channels, q_dim)

    def heads(self, x: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head q, k, v, each (B, heads, N, channels / heads)."""
        x = self.norm_q(x)
        context = self.norm_kv(context) if self.is_cross else x
        return tuple(
            rearrange(proj(inp), "b n (h d) -> b h n d", h=self.num_heads)
            for proj, inp in ((self.to_q, x), (self.to_k, context), (self.to_v, context))
        )

    def weights(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Attention weights (B, heads, N_x, N_context), for diagnostics."""
        q, k, _ = self.heads(x, context)
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        q, k, v = self.heads(x, context)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class AttentionLayer(nn.Module):
    """x + Attention(x[, context]), then x + MLP(LN(x)) with a GELU MLP of width widening_factor * dim."""

    def __init__(
        self,
        dim: int,
        context_dim: Optional[int],
        num_heads: int,
        widening_factor: int,
        qk_channels: Optional[int],
        v_channels: Optional[int],
        dropout: float,
    ):
        super().__init__()
        self.attention = Attention(dim, context_dim, num_heads, qk_channels, v_channels, dropout)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, widening_factor * dim),
            nn.GELU(),
            nn.Linear(widening_factor * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        x = x + self.attention(x, context)
        return x + self.mlp(x)


class PerceiverIO(ScoreField):
    """DPF score field: (context pairs, query pairs, t) -> predicted noise (B, Nq, out_dim) at the queries.

    qk_channels / v_channels set the attention width of every layer (default: the query stream's width, latent_dim);
    num_cross_heads serves the encoder and decoder cross-attentions, num_self_heads the latent self-attentions;
    dropout applies to attention weights and MLP outputs; init / initializer_range: see the module docstring.
    cross_attend_blocks: how many encoder blocks, from the first, read the context (None: all, as DPF; 1: Perceiver
    IO's and transformers' structure, the later blocks only self-attend).
    """

    def __init__(self, coord_dim: int, signal_dim: int, out_dim: Optional[int] = None, *, num_latents: int = 512,
                 latent_dim: int = 512, num_blocks: int = 12, self_attends_per_block: int = 2,
                 num_cross_heads: int = 4, num_self_heads: int = 4, num_decoder_blocks: int = 4,
                 widening_factor: int = 1, qk_channels: Optional[int] = None, v_channels: Optional[int] = None,
                 dropout: float = 0.0, init: str = "hf", initializer_range: float = 0.02,
                 cross_attend_blocks: Optional[int] = None, **tokens):
        if init not in INITS:
            raise ValueError(f"init={init!r} is not one of {INITS}")
        if min(num_latents, latent_dim, num_blocks, num_decoder_blocks, widening_factor) < 1:
            raise ValueError(
                "PerceiverIO needs num_latents, latent_dim, num_blocks, num_decoder_blocks and widening_factor >= 1"
            )
        cross_attend_blocks = num_blocks if cross_attend_blocks is None else cross_attend_blocks
        if not 1 <= cross_attend_blocks <= num_blocks:
            raise ValueError(f"cross_attend_blocks={cross_attend_blocks} must be in [1, num_blocks={num_blocks}] "
                             "(null: every block reads the context)")
        super().__init__(coord_dim, signal_dim, out_dim, **tokens)
        token_dim = self.tokenizer.out_dim

        def layer(context_dim: Optional[int], heads: int) -> AttentionLayer:
            return AttentionLayer(latent_dim, context_dim, heads, widening_factor, qk_channels, v_channels, dropout)

        latent_std = 1.0 if init == "lucidrains" else initializer_range
        self.latents = nn.Parameter(torch.randn(num_latents, latent_dim) * latent_std)
        self.encoder_blocks = nn.ModuleList(
            nn.ModuleList(
                ([layer(token_dim, num_cross_heads)] if block < cross_attend_blocks else [])
                + [layer(None, num_self_heads) for _ in range(self_attends_per_block)]
            )
            for block in range(num_blocks)
        )
        self.query_proj = nn.Linear(token_dim, latent_dim)
        self.decoder_blocks = nn.ModuleList(layer(latent_dim, num_cross_heads) for _ in range(num_decoder_blocks))
        self.head = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, self.out_dim))
        if init == "hf":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=initializer_range)
                    nn.init.zeros_(module.bias)

    def encode(self, context: Tensor) -> Tensor:
        """Context tokens (B, Nc, token_dim) -> latents (B, num_latents, latent_dim)."""
        latents = self.latents.expand(context.shape[0], -1, -1)
        for block in self.encoder_blocks:
            for attention in block:
                latents = attention(latents, context) if attention.attention.is_cross else attention(latents)
        return latents

    def score(self, context_coords: Tensor, context: Tensor, query_coords: Tensor, queries: Tensor) -> Tensor:
        latents = self.encode(context)
        queries = self.query_proj(queries)
        for block in self.decoder_blocks:
            queries = block(queries, latents)
        return self.head(queries)

    @torch.no_grad()
    def latent_statistics(self, context_coords: Tensor, context_values: Tensor, query_coords: Tensor,
                          query_values: Tensor, t: Tensor) -> dict[str, Tensor]:
        """Per-field diagnostics of latent collapse, each (B,):
        latent_spread: ||L - mean_latents(L)|| / ||L|| of the encoder output L (0: every latent is one vector);
        decoder_entropy: the first decoder cross-attention's entropy over the latents, averaged over heads and
        queries (ln(num_latents): uniform, the decoder reads one pooled vector);
        encoder_reach: exp(entropy) / Nc of the first encoder cross-attention over the context, averaged over heads
        and latents: the share of the context one latent reads (1: uniform, every latent pools the whole field)."""
        def entropy(weights: Tensor) -> Tensor:
            return -(weights * weights.clamp_min(1e-30).log()).sum(-1)

        context = self.tokenizer(context_coords, context_values, t)
        first_read = self.encoder_blocks[0][0].attention.weights(self.latents.expand(len(context), -1, -1), context)
        latents = self.encode(context)
        spread = (latents - latents.mean(1, keepdim=True)).flatten(1).norm(dim=1) / latents.flatten(1).norm(dim=1)
        weights = self.decoder_blocks[0].attention.weights(self.query_proj(self.tokenizer(query_coords, query_values,
                                                                                           t)), latents)
        return {"latent_spread": spread, "decoder_entropy": entropy(weights).mean((1, 2)),
                "encoder_reach": entropy(first_read).exp().mean((1, 2)) / context.shape[1]}
