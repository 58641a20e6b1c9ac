"""Convolution on a subset of lattice points (∞-Diff's sparse neural operator, Bond-Taylor & Willcocks 2023,
Sec. 4.2), depthwise (the paper's) or regular (Table 2's "Regular Convs"), pure PyTorch on CPU and GPU.

Points are given as values (B, m, C) at distinct flat indices (B, m) into an H x W lattice (row-major). The output
lives at the input points only (a submanifold convolution): out_i = sum_o w_o x_{i + o} over the sampled
neighbours i + o, with F.conv2d's cross-correlation convention (offset o = (a - k//2, b - k//2) for w[:, :, a, b]).
A (C, 1, k, k) weight is depthwise, a (C_out, C, k, k) one regular; `dilation` d spaces the taps d cells apart
(offsets d o), for points that are a sparse subset of a finer lattice (Table 2's "Sparse Downsample").

Backends (same maths, checked against each other, a dense masked conv and brute force):
- "dense_scatter" (default): scatter the points into a zero (B, H, W, C) buffer, one dense conv2d in
  channels-last, gather the rows back. Fastest on CPU and GPU at the densities ∞-Diff trains at (>= 1/8).
- "kernel_map": per kernel offset, look up each point's neighbour in an index image, multiply (depthwise) or
  matrix-multiply (regular) and index_add:
  memory O(m k^2) instead of O(HW), for very sparse points; the reference.
- "spconv" (optional, `pip install spconv`, in the `peers` extra): spconv's SubMConv2d, imported only when
  selected; regular kernels only (spconv has no depthwise convolution), for the "Regular Convs" ablation.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("dense_scatter", "kernel_map", "spconv")
DEPTHWISE_BACKENDS = ("dense_scatter", "kernel_map")


def check_kernel_size(kernel_size: int, name: str = "kernel_size") -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{name}={kernel_size!r} must be an odd int >= 1 (a kernel centred on its point)")
    return kernel_size


def resized_kernel_size(kernel_size: int, ratio: float) -> int:
    """The kernel size covering the same extent at `ratio` x the training resolution: the odd
    2 round((k r - 1) / 2) + 1 (Python's round-half-even, as the official code), at least 3; k itself at r = 1."""
    check_kernel_size(kernel_size)
    if ratio == 1:
        return kernel_size
    return max(3, 2 * round((kernel_size * ratio - 1) / 2) + 1)


def resize_kernel(weight: Tensor, ratio: float) -> Tensor:
    """A (C_out, C_in, k, k) kernel bilinearly resampled to `resized_kernel_size(k, ratio)` (the paper's resolution
    transfer: bilinear kernel interpolation)."""
    size = resized_kernel_size(weight.shape[-1], ratio)
    if size == weight.shape[-1]:
        return weight
    return F.interpolate(weight, size=(size, size), mode="bilinear", align_corners=False)


def check_lattice_index(index: Tensor, shape: tuple[int, int]) -> None:
    """Raise unless every row of `index` (B, m) holds distinct flat indices into an H x W lattice."""
    num_cells = shape[0] * shape[1]
    if index.dtype not in (torch.int32, torch.int64) or index.dim() != 2:
        raise ValueError(f"lattice indices must be an integer tensor (B, m), got {index.dtype} {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_cells):
        raise ValueError(f"lattice indices must lie in [0, {num_cells}) for a {shape[0]}x{shape[1]} lattice, got "
                         f"values in [{int(index.min())}, {int(index.max())}]")
    ordered = index.sort(dim=1).values
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        raise ValueError("lattice indices repeat a point within a field; a sparse convolution needs distinct "
                         "points (draw the subset without replacement)")


def _scatter(values: Tensor, index: Tensor, shape: tuple[int, int]) -> Tensor:
    """(B, m, C) points -> (B, C, H, W) zero-filled image in channels-last memory."""
    batch, _, channels = values.shape
    buffer = values.new_zeros(batch, shape[0] * shape[1], channels)
    buffer = buffer.scatter(1, index.unsqueeze(-1).expand(-1, -1, channels), values)
    return buffer.view(batch, shape[0], shape[1], channels).permute(0, 3, 1, 2)


def _gather(image: Tensor, index: Tensor) -> Tensor:
    """(B, C, H, W) image -> (B, m, C) rows at the flat indices."""
    batch, channels = image.shape[:2]
    rows = image.permute(0, 2, 3, 1).reshape(batch, -1, channels)
    return torch.gather(rows, 1, index.unsqueeze(-1).expand(-1, -1, channels))


def _dense_scatter(values: Tensor, index: Tensor, shape: tuple[int, int], weight: Tensor,
                   dilation: int = 1) -> Tensor:
    image = _scatter(values, index, shape)
    out = F.conv2d(image, weight, padding=dilation * (weight.shape[-1] // 2), dilation=dilation,
                   groups=values.shape[-1] // weight.shape[1])
    return _gather(out, index)


def _kernel_map(values: Tensor, index: Tensor, shape: tuple[int, int], weight: Tensor, dilation: int = 1) -> Tensor:
    batch, num_points, channels = values.shape
    height, width = shape
    size = weight.shape[-1]
    pad = dilation * (size // 2)
    # each lattice cell's point number in the flattened batch (-1: not sampled), padded so offsets stay in range
    table = torch.full((batch, height + 2 * pad, width + 2 * pad), -1, dtype=torch.long, device=values.device)
    rows, cols = index // width + pad, index % width + pad
    flat = torch.arange(batch * num_points, device=values.device).view(batch, num_points)
    batch_of = torch.arange(batch, device=values.device)[:, None].expand(-1, num_points)
    table[batch_of, rows, cols] = flat
    points = values.reshape(batch * num_points, channels)
    depthwise = weight.shape[1] == 1 and channels > 1
    out = points.new_zeros(batch * num_points, weight.shape[0])
    for a in range(size):  # a loop over the k^2 kernel offsets, each vectorised over every point
        for b in range(size):
            neighbour = table[batch_of, rows + dilation * a - pad, cols + dilation * b - pad].reshape(-1)
            present = neighbour >= 0
            targets = flat.reshape(-1)[present]
            taps = weight[:, :, a, b]
            contribution = points[neighbour[present]] * taps[:, 0] if depthwise else points[neighbour[present]] @ taps.T
            out = out.index_add(0, targets, contribution.to(out.dtype))  # autocast makes the matmul bf16
    return out.view(batch, num_points, weight.shape[0])


@functools.cache
def _spconv_module():
    try:
        import spconv.pytorch as spconv_pytorch
        import spconv.pytorch.ops as spconv_ops
    except ImportError as error:
        raise ImportError("sparse convolution backend 'spconv' needs spconv: `pip install spconv` (or the "
                          "`peers` extra: `pip install -e .[peers]`), or choose backend 'dense_scatter' or "
                          "'kernel_map'") from error
    if not torch.cuda.is_available():
        # spconv's backward asks torch.cuda for its stream even for CPU tensors; 0 is the CPU "stream"
        spconv_ops.get_current_stream = lambda: 0
    return spconv_pytorch


@functools.cache
def _spconv_layer(in_channels: int, out_channels: int, kernel_size: int, dilation: int):
    """A weightless SubMConv2d shell: `_spconv` passes the weight in through functional_call."""
    with torch.device("meta"):
        return _spconv_module().SubMConv2d(in_channels, out_channels, kernel_size, dilation=dilation, bias=False)


def _spconv(values: Tensor, index: Tensor, shape: tuple[int, int], weight: Tensor, dilation: int = 1) -> Tensor:
    batch, num_points, channels = values.shape
    if weight.shape[1] == 1 and channels > 1:
        raise ValueError(f"backend 'spconv' has no depthwise convolution (got a {tuple(weight.shape)} kernel for "
                         f"{channels} channels); use one of {', '.join(DEPTHWISE_BACKENDS)}")
    if values.dtype not in (torch.float16, torch.float32, torch.float64):
        raise ValueError(f"backend 'spconv' computes in float16/32/64, got {values.dtype}; cast the points or use "
                         f"one of {', '.join(DEPTHWISE_BACKENDS)}")
    spconv_pytorch = _spconv_module()
    layer = _spconv_layer(channels, weight.shape[0], weight.shape[-1], dilation)
    batch_of = torch.arange(batch, device=index.device)[:, None].expand(-1, num_points)
    width = shape[1]
    # spconv silently misreads non-contiguous coordinates
    coordinates = torch.stack([batch_of, index // width, index % width], -1).reshape(-1, 3).int().contiguous()
    points = spconv_pytorch.SparseConvTensor(values.reshape(-1, channels), coordinates, list(shape), batch)
    # spconv's kernels are (C_out, k, k, C_in), same cross-correlation orientation; its backward wants it contiguous
    kernel = weight.permute(0, 2, 3, 1).contiguous()
    with torch.autocast(values.device.type, enabled=False):  # spconv has no bf16 kernels: compute in values' dtype
        out = torch.func.functional_call(layer, {"weight": kernel}, (points,)).features
    return out.view(batch, num_points, weight.shape[0])


def sparse_conv(values: Tensor, index: Tensor, shape: tuple[int, int], weight: Tensor,
                backend: str = "dense_scatter", dilation: int = 1) -> Tensor:
    """Convolution of points `values` (B, m, C) at lattice `index` (B, m) of an H x W lattice with `weight`
    (C, 1, k, k) (depthwise) or (C_out, C, k, k) (regular), k odd, no bias: (B, m, C or C_out) at the same points
    (see the module docstring)."""
    if values.dim() != 3 or index.shape != values.shape[:2]:
        raise ValueError(f"values must be (B, m, C) and index (B, m); got {tuple(values.shape)} and "
                         f"{tuple(index.shape)}")
    channels = values.shape[-1]
    depthwise = weight.shape[0] == channels and weight.shape[1] == 1
    if weight.dim() != 4 or not (depthwise or weight.shape[1] == channels) or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"a kernel for {channels} channels is ({channels}, 1, k, k) (depthwise) or "
                         f"(C_out, {channels}, k, k) (regular), got {tuple(weight.shape)}")
    check_kernel_size(weight.shape[-1], "the kernel's size")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation={dilation!r} must be an int >= 1")
    if backend == "dense_scatter":
        return _dense_scatter(values, index, shape, weight, dilation)
    if backend == "kernel_map":
        return _kernel_map(values, index, shape, weight, dilation)
    if backend == "spconv":
        return _spconv(values, index, shape, weight, dilation)
    raise ValueError(f"unknown sparse convolution backend {backend!r}; valid: {', '.join(BACKENDS)}")


def neighbour_count(index: Tensor, shape: tuple[int, int], kernel_size: int, dilation: int = 1) -> Tensor:
    """(B, m, 1): how many of the points `index` lie on the k x k taps (d apart) around each of them (itself
    included)."""
    check_kernel_size(kernel_size)
    ones = torch.ones(index.shape[0], index.shape[1], 1, device=index.device)
    kernel = torch.ones(1, 1, kernel_size, kernel_size, device=index.device)
    return _dense_scatter(ones, index, shape, kernel, dilation)


def support_normaliser(index: Tensor, shape: tuple[int, int], kernel_size: int, train_kernel_size: int,
                       dilation: int = 1) -> Tensor:
    """The official "norm to avoid edge artefacts": neighbour count in the (resized) window / k_train^2, so that
    conv / normaliser estimates the sum over the k_train^2 cells of a full training-resolution window whatever the
    density (about (k' / k)^2 ~ r^2 on a full grid at r x the training resolution)."""
    return neighbour_count(index, shape, kernel_size, dilation) / train_kernel_size**2
