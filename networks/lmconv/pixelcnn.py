"""The locally masked PixelCNN of Jain et al. 2020 (Sec. 2.5): PixelCNN++ as a single stream of the same depth,
every convolution a locally masked one, dilated convolutions between stages instead of down/upsampling, and
positional normalisation (PONO) since each location's mask has a different number of ones. No dropout.

The layout follows the authors' code: [x, ones] -> LMConv (type A) -> PONO; an up pass of 3 stages of
`num_res_blocks` gated residual blocks with a dilated LMConv + PONO between them; a down pass of stages of
num_res_blocks, num_res_blocks + 1, num_res_blocks + 1 blocks, each block taking a skip from the up pass (last
in, first out), with dilated LMConvs between; then ELU and a 1x1 head. With 160 filters and 5 blocks per stage
this has 46.07M parameters (the paper's 46M); with 320 filters 184.2M (its CelebA-HQ model).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from networks.lmconv.conv import LocallyMaskedConv2d, PositionalNorm
from networks.lmconv.masks import OrderMasks

NUM_STAGES = 3


def concat_elu(x: Tensor) -> Tensor:
    """ELU of x and of -x, concatenated over channels (PixelCNN++'s nonlinearity; doubles the channels)."""
    return F.elu(torch.cat([x, -x], 1))


def network_in_network(in_channels: int, out_channels: int) -> nn.Module:
    """A weight-normalised 1x1 convolution (the authors keep weight norm on these under PONO)."""
    return weight_norm(nn.Conv2d(in_channels, out_channels, 1))


class GatedResBlock(nn.Module):
    """x + a * sigmoid(b), [a, b] = LMConv(concat_elu(LMConv(concat_elu(x)) + nin(concat_elu(skip)))), then PONO."""

    def __init__(self, channels: int, kernel_size: int, skip: bool, backend: str):
        super().__init__()
        self.conv_in = LocallyMaskedConv2d(2 * channels, channels, kernel_size, backend=backend)
        self.skip = network_in_network(2 * channels, channels) if skip else None
        self.conv_out = LocallyMaskedConv2d(2 * channels, 2 * channels, kernel_size, backend=backend)
        self.norm = PositionalNorm()

    def forward(self, x: Tensor, mask: Tensor, skip: Tensor | None = None) -> Tensor:
        hidden = self.conv_in(concat_elu(x), mask)
        if self.skip is not None:
            hidden = hidden + self.skip(concat_elu(skip))
        a, b = self.conv_out(concat_elu(hidden), mask).chunk(2, 1)
        return self.norm(x + a * torch.sigmoid(b))


class LocallyMaskedPixelCNN(nn.Module):
    """`net(x, masks) -> (B, out_channels, H, W)` distribution parameters of every pixel given the pixels before it
    in the order whose `OrderMasks` are passed; x (B, in_channels, H, W) in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, filters: int = 160, num_res_blocks: int = 5,
                 kernel_size: int = 3, dilation: int = 2, norm: str = "pono", backend: str = "offsets"):
        super().__init__()
        if norm != "pono":
            raise ValueError(f"norm={norm!r}: the locally masked PixelCNN normalises with PONO (norm=pono) only; "
                             "batch, group or layer norm average over locations, so a pixel would see later ones")
        self.kernel_size, self.dilation = kernel_size, dilation
        self.first = LocallyMaskedConv2d(in_channels + 1, filters, kernel_size, backend=backend)
        self.up = nn.ModuleList(nn.ModuleList(GatedResBlock(filters, kernel_size, False, backend)
                                              for _ in range(num_res_blocks)) for _ in range(NUM_STAGES))
        down_blocks = [num_res_blocks] + [num_res_blocks + 1] * (NUM_STAGES - 1)
        self.down = nn.ModuleList(nn.ModuleList(GatedResBlock(filters, kernel_size, True, backend)
                                                for _ in range(count)) for count in down_blocks)
        self.up_dilated = nn.ModuleList(LocallyMaskedConv2d(filters, filters, kernel_size, dilation, backend=backend)
                                        for _ in range(NUM_STAGES - 1))
        self.down_dilated = nn.ModuleList(LocallyMaskedConv2d(filters, filters, kernel_size, dilation,
                                                              backend=backend) for _ in range(NUM_STAGES - 1))
        self.norm = PositionalNorm()
        self.head = network_in_network(filters, out_channels)

    def forward(self, x: Tensor, masks: OrderMasks) -> Tensor:
        # the ones channel lets the first layer tell zero padding (never visible) from a visible zero pixel
        x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        features = [self.norm(self.first(x, masks.first))]
        for stage, blocks in enumerate(self.up):
            for block in blocks:
                features.append(block(features[-1], masks.undilated))
            if stage < NUM_STAGES - 1:
                features.append(self.norm(self.up_dilated[stage](features[-1], masks.dilated)))
        hidden = features.pop()
        for stage, blocks in enumerate(self.down):
            for block in blocks:
                hidden = block(hidden, masks.undilated, skip=features.pop())
            if stage < NUM_STAGES - 1:
                hidden = self.norm(self.down_dilated[stage](hidden, masks.dilated))
        return self.head(F.elu(hidden))
