"""Locally masked 2-D convolution (Jain et al. 2020, Algorithm 1): a convolution whose kernel is masked differently
at every output location (and, for completion, in every sample).

Backends (equal to each other, gradients included; tests/networks/lmconv):
- "offsets" (default): sum over kernel offsets j of mask_j * conv1x1_j(x shifted by offset j). It keeps no im2col
  buffer and measured 1.5-2.5x faster than "unfold" on CPU (see README, LMConv benchmark).
- "unfold": the paper's im2col reference: unfold, mask the patches, one matrix product.
- "unfold_recompute": "unfold" with the memory-saving backward of the paper (App. 5.5): saves the input, mask
  and weight, and recomputes the masked patches in the backward pass instead of keeping them.
The timing reference "dense" is a plain F.conv2d of the same size that ignores the mask: not autoregressive, only
for benchmarks (`method.net.backend=dense`), what the backends are measured against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.lmconv.masks import kernel_offsets

BACKENDS = ("offsets", "unfold", "unfold_recompute")
DENSE_REFERENCE = "dense"


def _masked_patches(x: Tensor, mask: Tensor, kernel_size: int, dilation: int) -> Tensor:
    """(B, C_in * k*k, H*W) im2col patches of x with mask (1 or B, k*k, H*W) applied (broadcast over C_in)."""
    batch, channels = x.shape[:2]
    patches = F.unfold(x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
    patches = patches.view(batch, channels, kernel_size ** 2, -1) * mask.unsqueeze(1)
    return patches.view(batch, channels * kernel_size ** 2, -1)


class _RecomputedUnfold(torch.autograd.Function):
    """Masked unfold + matmul whose backward recomputes the patches (memory ~ input, not k*k times it)."""

    @staticmethod
    def forward(ctx, x, mask, weight, bias, kernel_size, dilation):
        ctx.save_for_backward(x, mask, weight)
        ctx.kernel_size, ctx.dilation, ctx.has_bias = kernel_size, dilation, bias is not None
        out = weight.flatten(1) @ _masked_patches(x, mask, kernel_size, dilation)
        return out if bias is None else out + bias[:, None]

    @staticmethod
    def backward(ctx, grad_out):
        x, mask, weight = ctx.saved_tensors
        k, d = ctx.kernel_size, ctx.dilation
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_patches = (weight.flatten(1).t() @ grad_out).view(x.shape[0], x.shape[1], k * k, -1)
            grad_patches = (grad_patches * mask.unsqueeze(1)).flatten(1, 2)
            grad_x = F.fold(grad_patches, x.shape[2:], k, dilation=d, padding=d * (k // 2))
        if ctx.needs_input_grad[2]:
            patches = _masked_patches(x, mask, k, d)
            grad_weight = torch.einsum("bon,bin->oi", grad_out, patches).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_out.sum((0, 2))
        return grad_x, None, grad_weight, grad_bias, None, None


class LocallyMaskedConv2d(nn.Conv2d):
    """`conv(x, mask)`: x (B, C_in, H, W), mask (k*k, H*W) or (B, k*k, H*W) from masks.kernel_masks; stride 1,
    'same' zero padding, odd kernel. With an all-ones mask it is F.conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 bias: bool = True, backend: str = "offsets"):
        kernel_offsets(kernel_size)  # refuses an even kernel
        if backend not in (*BACKENDS, DENSE_REFERENCE):
            raise ValueError(f"unknown LMConv backend {backend!r}; valid: {', '.join(BACKENDS)} (and "
                             f"{DENSE_REFERENCE!r}, the unmasked timing reference)")
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)
        self.backend = backend

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        k, d = self.kernel_size[0], self.dilation[0]
        if mask.dim() == 2:
            mask = mask.unsqueeze(0)
        if mask.shape[1:] != (k * k, height * width) or mask.shape[0] not in (1, batch):
            raise ValueError(f"LMConv mask must be ({k * k}, {height * width}) or ({batch}, {k * k}, "
                             f"{height * width}) for a {k}x{k} kernel on {height}x{width} inputs of batch {batch}, "
                             f"got {tuple(mask.shape)}")
        if self.backend == DENSE_REFERENCE:
            return F.conv2d(x, self.weight, self.bias, padding=d * (k // 2), dilation=d)
        mask = mask.to(x.dtype)
        if self.backend == "offsets":
            return self._offsets(x, mask.view(mask.shape[0], 1, k * k, height, width))
        if self.backend == "unfold":
            out = self.weight.flatten(1) @ _masked_patches(x, mask, k, d)
            out = out if self.bias is None else out + self.bias[:, None]
        else:
            out = _RecomputedUnfold.apply(x, mask, self.weight, self.bias, k, d)
        return out.view(batch, self.out_channels, height, width)

    def _offsets(self, x: Tensor, mask: Tensor) -> Tensor:
        height, width = x.shape[2:]
        k, d = self.kernel_size[0], self.dilation[0]
        padded = F.pad(x, (d * (k // 2),) * 4)
        out = None
        for j, (dr, dc) in enumerate((kernel_offsets(k) + k // 2).tolist()):
            shifted = padded[:, :, dr * d:dr * d + height, dc * d:dc * d + width]
            term = F.conv2d(shifted, self.weight[:, :, dr:dr + 1, dc:dc + 1]) * mask[:, :, j]
            out = term if out is None else out + term
        return out if self.bias is None else out + self.bias[:, None, None]


class PositionalNorm(nn.Module):
    """PONO (Li et al. 2019): each location's features normalised over channels, without affine parameters; it
    mixes no locations, so it keeps the autoregressive property."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps)
