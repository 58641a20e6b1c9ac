"""Per-location kernel masks of a generation order (Jain et al. 2020, Algorithm 2), vectorised.

Output location p may read input location q = p + d * delta (delta a kernel offset) when q was generated before p:
rank[q] < rank[p]. The first layer ("type A") never reads the centre, so no pixel sees its own value; later layers
("type B") read the centre, whose features already obey the order. Zero padding is never read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def kernel_offsets(kernel_size: int, device=None) -> torch.Tensor:
    """(k*k, 2) kernel offsets (row, col) in row-major kernel order, the order of F.unfold's rows."""
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"a locally masked convolution needs an odd kernel size (a centre), got {kernel_size}")
    half = torch.arange(kernel_size, device=device) - kernel_size // 2
    return torch.cartesian_prod(half, half)


def kernel_masks(rank: torch.Tensor, shape: tuple[int, int], kernel_size: int, dilation: int = 1,
                 include_centre: bool = True) -> torch.Tensor:
    """Masks (..., k*k, H*W) float of a generation order given by `rank` (..., H*W) (see orders.rank_of):
    entry [j, p] is 1 when location p may read its neighbour at kernel offset j."""
    height, width = shape
    if rank.shape[-1] != height * width:
        raise ValueError(f"rank has {rank.shape[-1]} entries for a {height}x{width} image")
    offsets = kernel_offsets(kernel_size, rank.device) * dilation  # (K, 2)
    rows = torch.arange(height, device=rank.device)[:, None].expand(height, width).reshape(-1)
    cols = torch.arange(width, device=rank.device)[None, :].expand(height, width).reshape(-1)
    neighbour_rows, neighbour_cols = rows + offsets[:, :1], cols + offsets[:, 1:]  # (K, N)
    inside = (neighbour_rows >= 0) & (neighbour_rows < height) & (neighbour_cols >= 0) & (neighbour_cols < width)
    neighbour = (neighbour_rows.clamp(0, height - 1) * width + neighbour_cols.clamp(0, width - 1))  # (K, N)
    neighbour_rank = rank[..., neighbour.reshape(-1)].reshape(*rank.shape[:-1], *neighbour.shape)
    visible = inside & (neighbour_rank < rank[..., None, :])
    if include_centre:
        visible[..., len(offsets) // 2, :] = True
    return visible.float()


@dataclass(frozen=True)
class OrderMasks:
    """The three mask sets a network needs for one order: the first layer's (type A, dilation 1), the undilated
    (type B, dilation 1) and the dilated layers' (type B, their dilation); each (k*k, H*W) or (B, k*k, H*W)."""

    first: torch.Tensor
    undilated: torch.Tensor
    dilated: torch.Tensor

    @classmethod
    def of(cls, rank: torch.Tensor, shape: tuple[int, int], kernel_size: int, dilation: int) -> "OrderMasks":
        return cls(first=kernel_masks(rank, shape, kernel_size, 1, include_centre=False),
                   undilated=kernel_masks(rank, shape, kernel_size, 1),
                   dilated=kernel_masks(rank, shape, kernel_size, dilation))
