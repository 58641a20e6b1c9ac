"""Operator cases: one operator timed alone on synthetic inputs (forward + backward), its variants side by side,
instead of an experiment's whole LitModule: `python experiments/benchmark.py operator=NAME` (conf/operator/NAME.yaml).

The config's `operator` node instantiates a builder: its `variants` are the rows compared and `build(variant,
device)` returns an OperatorRun. A step is the run's forward, then the backward of the sum of its output into
every leaf (inputs and weights), their gradients cleared first; inputs are built before the steps, so the peak
memory is the steps' own (activations and gradients).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from networks.sparse_conv import BACKENDS, DEPTHWISE_BACKENDS, check_kernel_size, sparse_conv, support_normaliser


@dataclasses.dataclass
class OperatorRun:
    """forward: the operator on its inputs; leaves: the tensors it differentiates; items: fields per step; points:
    points per field; params: the operator's weights."""

    forward: Callable[[], Tensor]
    leaves: Sequence[Tensor]
    items: int
    points: int
    params: int


def masked_dense_conv(image: Tensor, mask: Tensor, weight: Tensor, normaliser: Tensor) -> Tensor:
    """The normalised sparse convolution computed on the whole grid: F.conv2d (depthwise for a (C, 1, k, k) weight,
    regular for a (C_out, C, k, k) one; zero padding) of the image (B, C, H, W) zeroed off the mask (B, 1, H, W),
    kept on the mask, divided by `normaliser` (B, 1, H, W)."""
    out = F.conv2d(image * mask, weight, padding=weight.shape[-1] // 2, groups=image.shape[1] // weight.shape[1])
    return out * mask / normaliser


class SparseConv:
    """∞-Diff's sparse convolution (networks.sparse_conv, divided by its neighbour-count normaliser as in
    networks.sparse_operator), depthwise (the paper's) or regular (C x C per offset, Table 2's "Regular Convs"), on a
    random `occupancy` of a grid_size^2 lattice, per backend (DEPTHWISE_BACKENDS, or BACKENDS for a regular conv),
    against "dense_masked": `masked_dense_conv` of the zero-filled grid with the same normaliser. The normaliser
    depends on the points only and is computed before the steps (the network computes it once per forward for all
    its convs)."""

    DENSE = "dense_masked"

    def __init__(self, variants: Sequence[str], grid_size: int, occupancy: float, channels: int, kernel_size: int,
                 batch_size: int, depthwise: bool = True, seed: int = 0):
        valid = [*(DEPTHWISE_BACKENDS if depthwise else BACKENDS), self.DENSE]
        if set(variants) - set(valid) or not variants:
            raise ValueError(f"operator.variants must be a non-empty subset of {valid} for a "
                             f"{'depthwise' if depthwise else 'regular'} conv, got {list(variants)}")
        if not 0 < occupancy <= 1:
            raise ValueError(f"operator.occupancy={occupancy} must be a fraction of the lattice in (0, 1]")
        self.variants, self.kernel_size = list(variants), check_kernel_size(kernel_size, "operator.kernel_size")
        self.shape = (grid_size, grid_size)
        num_points = max(1, round(occupancy * grid_size**2))
        generator = torch.Generator().manual_seed(seed)
        self.index = torch.rand(batch_size, grid_size**2, generator=generator).argsort(dim=1)[:, :num_points]
        self.values = torch.randn(batch_size, num_points, channels, generator=generator)
        in_per_out = 1 if depthwise else channels
        self.weight = torch.randn(channels, in_per_out, kernel_size, kernel_size, generator=generator) / (
            kernel_size * in_per_out**0.5)

    def build(self, variant: str, device: torch.device) -> OperatorRun:
        index, weight = self.index.to(device), self.weight.to(device).requires_grad_()
        normaliser = support_normaliser(index, self.shape, self.kernel_size, self.kernel_size)
        batch, num_points, channels = self.values.shape
        run = dict(items=batch, points=num_points, params=weight.numel())
        if variant in BACKENDS:
            values = self.values.to(device).requires_grad_()
            return OperatorRun(lambda: sparse_conv(values, index, self.shape, weight, variant) / normaliser,
                               [values, weight], **run)
        cells = torch.zeros(batch, self.shape[0] * self.shape[1], channels + 2, device=device)
        rows = torch.cat([self.values.to(device), torch.ones(batch, num_points, 1, device=device), normaliser], -1)
        cells.scatter_(1, index.unsqueeze(-1).expand(-1, -1, channels + 2), rows)
        dense = cells.transpose(1, 2).reshape(batch, channels + 2, *self.shape)
        image, mask = dense[:, :channels].contiguous().requires_grad_(), dense[:, channels:channels + 1]
        grid_normaliser = torch.where(mask > 0, dense[:, channels + 1:], torch.ones_like(mask))
        return OperatorRun(lambda: masked_dense_conv(image, mask, weight, grid_normaliser), [image, weight], **run)
