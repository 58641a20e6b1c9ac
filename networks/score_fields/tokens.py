"""What every DPF score field shares: one token per point from [Fourier(coords), noisy values, embedding(t)],
their checks, and the paired read-out of the Transformer and MLP-mixer backbones."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from networks.embeddings import FourierFeatures, timestep_embedding

TIME_SPACINGS = ("geometric", "linear")
TOKEN_LAYOUTS = ("concat", "separate", "modulated")


def embedding_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear + LayerNorm + GELU: ml-mcf's embedding of each token part."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.GELU())


class FieldTokenizer(nn.Module):
    """Turns (coords (B, N, coord_dim), values (B, N, signal_dim), t (B,)) into tokens (B, N, out_dim).

    time_spacing: "geometric" embeds the step index with DDPM's sinusoid (time_bands frequencies from 1 down to
        1/10000 per step, so the bands span every scale of t); "linear" maps t onto [-1, 1] and uses Perceiver
        Fourier bands linspace(1, T/2) (all but a few have periods under 30 steps: a hash of t).
    tokens: "concat" is the paper's [Fourier(coords), values, time features]; "separate" is apple/ml-mcf's: each
        part through its own Linear + LayerNorm + GELU to embed_dim (default: the coordinate features' width),
        then concatenated (the backbone's input projection follows, as ml-mcf's cat_proj). "modulated" appends
        to "concat" the products value x Fourier(coords) (per channel): an attention layer that averages tokens
        then reads the field's Fourier coefficients directly, where sums of concatenated parts carry only the mean
        value (not in the paper).
    """

    def __init__(
        self,
        coord_dim: int,
        signal_dim: int,
        coord_bands: int = 10,
        coord_max_resolution: int = 64,
        time_bands: int = 64,
        num_timesteps: int = 1000,
        time_spacing: str = "geometric",
        tokens: str = "concat",
        embed_dim: Optional[int] = None,
    ):
        super().__init__()
        if coord_dim < 1 or signal_dim < 1:
            raise ValueError(f"a score field needs coord_dim >= 1 and signal_dim >= 1, got {coord_dim}, {signal_dim}")
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2 to normalise t onto [-1, 1], got {num_timesteps}")
        if time_spacing not in TIME_SPACINGS:
            raise ValueError(f"time_spacing={time_spacing!r} is not one of {TIME_SPACINGS}")
        if tokens not in TOKEN_LAYOUTS:
            raise ValueError(f"tokens={tokens!r} is not one of {TOKEN_LAYOUTS}")
        if time_spacing == "geometric" and time_bands < 2:
            raise ValueError(f"time_spacing=geometric needs time_bands >= 2 (its lowest and highest frequency), "
                             f"got {time_bands}")
        self.coord_dim = coord_dim
        self.signal_dim = signal_dim
        self.num_timesteps = num_timesteps
        self.time_spacing, self.time_bands = time_spacing, time_bands
        self.coord_features = FourierFeatures(coord_bands, coord_max_resolution)
        self.linear_time_features = FourierFeatures(time_bands, num_timesteps) if time_spacing == "linear" else None
        coord_width = self.coord_features.out_dim(coord_dim)
        time_width = 2 * time_bands + int(time_spacing == "linear")
        if tokens == "separate":
            embed_dim = embed_dim or coord_width
            self.embed_coords = embedding_mlp(coord_width, embed_dim)
            self.embed_values = embedding_mlp(signal_dim, embed_dim)
            self.embed_time = embedding_mlp(time_width, embed_dim)
            self.out_dim = 3 * embed_dim
        elif embed_dim is not None:
            raise ValueError(f"embed_dim={embed_dim} is the width of tokens=separate's part embeddings; "
                             f"remove it or set tokens=separate")
        else:
            self.embed_coords = self.embed_values = self.embed_time = nn.Identity()
            self.out_dim = coord_width + signal_dim + time_width + signal_dim * coord_width * (tokens == "modulated")
        self.tokens = tokens

    def check(self, coords: Tensor, values: Tensor, t: Tensor, name: str) -> None:
        """Raise a ValueError that names what is wrong with one (coords, values, t) set."""
        if coords.ndim != 3 or coords.shape[-1] != self.coord_dim:
            raise ValueError(
                f"score field was built with coord_dim={self.coord_dim} but {name}_coords has shape "
                f"{tuple(coords.shape)} (expected (B, N, {self.coord_dim})); set the model's coord_dim to the "
                f"domain's coord_dim (2-D grid: 2, 3-D grid: 3, sphere / lat-lon unit vectors: 3)"
            )
        if values.ndim != 3 or values.shape[-1] != self.signal_dim:
            raise ValueError(
                f"score field was built with signal_dim={self.signal_dim} but {name}_values has shape "
                f"{tuple(values.shape)} (expected (B, N, {self.signal_dim})); set signal_dim to the data's channels"
            )
        if coords.shape[:2] != values.shape[:2]:
            raise ValueError(
                f"{name}_coords {tuple(coords.shape)} and {name}_values {tuple(values.shape)} must share (B, N)"
            )
        if coords.shape[1] == 0:
            raise ValueError(f"{name} set is empty: a score field needs at least one {name} point")
        if t.shape != (coords.shape[0],):
            raise ValueError(f"t must hold one timestep per field, shape ({coords.shape[0]},); got {tuple(t.shape)}")

    def time_features(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        """(B,) step indices -> (B, time width) features."""
        if self.time_spacing == "geometric":
            return timestep_embedding(t, 2 * self.time_bands).to(dtype)
        t_normalised = 2.0 * t.to(dtype) / (self.num_timesteps - 1) - 1.0
        return self.linear_time_features(t_normalised[:, None])

    def forward(self, coords: Tensor, values: Tensor, t: Tensor) -> Tensor:
        time = self.embed_time(self.time_features(t, coords.dtype))
        time = time[:, None, :].expand(-1, coords.shape[1], -1)
        coord_features = self.coord_features(coords)
        parts = [self.embed_coords(coord_features), self.embed_values(values), time]
        if self.tokens == "modulated":
            parts.append((values[..., :, None] * coord_features[..., None, :]).flatten(-2))
        return torch.cat(parts, dim=-1)


def check_paired(context_coords: Tensor, query_coords: Tensor, network: str) -> None:
    """Backbones that pair context token i with query token i (DPF Sect. D) need context points = query points."""
    if context_coords.shape != query_coords.shape:
        raise ValueError(
            f"{network} pairs context token i with query token i (DPF Sect. D), so it needs context points = query "
            f"points; got {context_coords.shape[1]} context and {query_coords.shape[1]} query points. Use the "
            f"same points for both (context = query), or use PerceiverIO for independent context/query sets"
        )
    # a value check syncs with the device: skip it while tracing for torch.compile
    if not torch.compiler.is_compiling() and not torch.equal(context_coords, query_coords):
        raise ValueError(
            f"{network} pairs context token i with query token i (DPF Sect. D), so context_coords must equal "
            f"query_coords in the same order; they differ. Pass the query points as the context"
        )


class ScoreField(nn.Module):
    """Base of the score fields: `forward(context_coords, context_values, query_coords, query_values, t)` returns
    the predicted noise (B, Nq, out_dim); subclasses implement `score(context_tokens, query_tokens)`.
    Token options (coord_bands, coord_max_resolution, time_bands, num_timesteps, time_spacing, tokens, embed_dim)
    are FieldTokenizer's."""

    def __init__(self, coord_dim: int, signal_dim: int, out_dim: Optional[int] = None, **tokens):
        super().__init__()
        self.tokenizer = FieldTokenizer(coord_dim, signal_dim, **tokens)
        self.coord_dim, self.signal_dim, self.out_dim = coord_dim, signal_dim, out_dim or signal_dim

    def score(self, context_coords: Tensor, context: Tensor, query_coords: Tensor, queries: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, context_coords: Tensor, context_values: Tensor, query_coords: Tensor, query_values: Tensor,
                t: Tensor) -> Tensor:
        self.tokenizer.check(context_coords, context_values, t, "context")
        self.tokenizer.check(query_coords, query_values, t, "query")
        return self.score(context_coords, self.tokenizer(context_coords, context_values, t), query_coords,
                          self.tokenizer(query_coords, query_values, t))


class PairedScoreField(ScoreField):
    """A backbone that encodes the context tokens in place; DPF Sect. D: "the resulting latents are concatenated
    with the corresponding query pairs and fed to a linear projection layer" (context point i = query point i)."""

    def __init__(self, coord_dim: int, signal_dim: int, out_dim: Optional[int] = None, *, dim: int, **tokens):
        super().__init__(coord_dim, signal_dim, out_dim, **tokens)
        self.input_proj = nn.Linear(self.tokenizer.out_dim, dim)
        self.head = nn.Linear(dim + self.tokenizer.out_dim, self.out_dim)

    def encode(self, context: Tensor) -> Tensor:
        """(B, N, dim) latents of the projected context tokens."""
        raise NotImplementedError

    def score(self, context_coords: Tensor, context: Tensor, query_coords: Tensor, queries: Tensor) -> Tensor:
        check_paired(context_coords, query_coords, type(self).__name__)
        return self.head(torch.cat([self.encode(self.input_proj(context)), queries], dim=-1))
