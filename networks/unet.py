"""Ho et al.'s DDPM U-Net (diffusion_tf/models/unet.py): a PixelCNN++ Wide-ResNet with GroupNorm, swish,
a sinusoidal time embedding added into every residual block and self-attention at chosen resolutions.

CIFAR-10 (ch 128, mults 1,2,2,2, 2 blocks, attention at 16) has 35.7M parameters; the 256^2 model
(mults 1,1,2,2,4,4) has 114M, as in the paper.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from networks.embeddings import timestep_embedding

# TF contrib group_norm's epsilon, which Ho's model uses
GROUPNORM_EPS = 1e-6


def xavier_init(module: nn.Module, scale: float = 1.0) -> nn.Module:
    """Ho's default_init: variance scaling (fan_avg, uniform), zero bias; scale 0 gives the zero-init layers."""
    if scale == 0.0:
        nn.init.zeros_(module.weight)
    else:
        nn.init.xavier_uniform_(module.weight, gain=scale**0.5)
    nn.init.zeros_(module.bias)
    return module


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, scale: float = 1.0) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
    return xavier_init(layer, scale)


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups, channels, eps=GROUPNORM_EPS)


class TimestepBlock(nn.Module):
    """A block that takes the time embedding as a second input."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        raise NotImplementedError


class TimestepSequential(nn.Sequential, TimestepBlock):
    """Sequential that passes the time embedding to the children that take it."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class ResBlock(TimestepBlock):
    """GN-swish-conv, + Dense(swish(temb)), GN-swish-dropout-conv (zero init), plus a 1x1 shortcut if widths differ."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float, num_groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_channels, num_groups), nn.SiLU(), conv(in_channels, out_channels))
        self.emb_proj = nn.Sequential(nn.SiLU(), xavier_init(nn.Linear(emb_channels, out_channels)))
        self.out_layers = nn.Sequential(
            group_norm(out_channels, num_groups),
            nn.SiLU(),
            nn.Dropout(dropout),
            conv(out_channels, out_channels, scale=0.0),
        )
        self.skip = nn.Identity() if in_channels == out_channels else conv(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        h = h + self.emb_proj(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Residual self-attention over all pixels: GN, 1x1 qkv, softmax(q k^T / sqrt(d)) v, 1x1 out (zero init)."""

    def __init__(self, channels: int, num_heads: int, num_groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, num_groups)
        self.qkv = conv(channels, 3 * channels, kernel_size=1)
        self.proj_out = conv(channels, channels, kernel_size=1, scale=0.0)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        qkv = rearrange(self.qkv(self.norm(x)), "b (three h d) x y -> three b h (x y) d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = rearrange(out, "b h (x y) d -> b (h d) x y", x=height, y=width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv(channels, channels, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """DDPM U-Net: eps_theta(x_t, t) on (B, C, H, W) images with H = W = image_size.

    Down path: num_res_blocks ResBlocks per level then a stride-2 conv (not after the last level); middle
    Res-Attn-Res; up path: num_res_blocks + 1 ResBlocks per level on [h, skip] then nearest x2 + conv.
    Attention follows every ResBlock at the resolutions in `attention_resolutions`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        num_groups: int = 32,
        num_heads: int = 1,
    ):
        super().__init__()
        channel_mults = tuple(channel_mults)
        attention_resolutions = tuple(attention_resolutions)
        num_levels = len(channel_mults)
        if num_levels < 1:
            raise ValueError("UNet needs at least one level in channel_mults")
        if image_size % 2 ** (num_levels - 1):
            raise ValueError(
                f"UNet with {num_levels} levels halves the image {num_levels - 1} times: image_size={image_size} "
                f"must be divisible by {2 ** (num_levels - 1)}; pad/crop the image or use fewer channel_mults"
            )
        level_channels = [base_channels * m for m in channel_mults]
        bad = [c for c in [base_channels, *level_channels] if c % num_groups]
        if bad:
            raise ValueError(
                f"GroupNorm with num_groups={num_groups} needs every channel count divisible by it; "
                f"base_channels={base_channels} x channel_mults={list(channel_mults)} gives {bad}"
            )
        level_resolutions = [image_size // 2**level for level in range(num_levels)]
        unreachable = sorted(set(attention_resolutions) - set(level_resolutions))
        if unreachable:
            raise ValueError(
                f"attention_resolutions {unreachable} are not resolutions of this UNet "
                f"(image_size={image_size}, levels at {level_resolutions})"
            )
        attention_channels = [c for c, r in zip(level_channels, level_resolutions) if r in attention_resolutions]
        if any(c % num_heads for c in [*attention_channels, level_channels[-1]]):
            raise ValueError(f"num_heads={num_heads} must divide the channels of every attention block")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = image_size
        self.base_channels = base_channels
        emb_channels = 4 * base_channels

        self.time_embed = nn.Sequential(
            xavier_init(nn.Linear(base_channels, emb_channels)),
            nn.SiLU(),
            xavier_init(nn.Linear(emb_channels, emb_channels)),
        )

        def res_block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_channels, dropout, num_groups)

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, num_heads, num_groups)

        self.input_blocks = nn.ModuleList([TimestepSequential(conv(in_channels, base_channels))])
        skip_channels = [base_channels]
        channels = base_channels
        for level, (level_ch, resolution) in enumerate(zip(level_channels, level_resolutions)):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(channels, level_ch)]
                channels = level_ch
                if resolution in attention_resolutions:
                    layers.append(attention(channels))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(channels)
            if level != num_levels - 1:
                self.input_blocks.append(TimestepSequential(Downsample(channels)))
                skip_channels.append(channels)

        self.middle_block = TimestepSequential(
            res_block(channels, channels), attention(channels), res_block(channels, channels)
        )

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(num_levels)):
            for block in range(num_res_blocks + 1):
                layers = [res_block(channels + skip_channels.pop(), level_channels[level])]
                channels = level_channels[level]
                if level_resolutions[level] in attention_resolutions:
                    layers.append(attention(channels))
                if level != 0 and block == num_res_blocks:
                    layers.append(Upsample(channels))
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(
            group_norm(channels, num_groups), nn.SiLU(), conv(channels, out_channels, scale=0.0)
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, in_channels, image_size, image_size); t: (B,) timesteps -> (B, out_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"UNet expects x of shape (B, {self.in_channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(x.shape)}"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet expects one timestep per image, t of shape ({x.shape[0]},); got {tuple(t.shape)}")
        emb = self.time_embed(timestep_embedding(t, self.base_channels).to(x.dtype))
        h = x
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
