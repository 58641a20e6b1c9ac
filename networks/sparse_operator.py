"""∞-Diff's denoiser (Bond-Taylor & Willcocks 2023, Sec. 4, Fig. 4, App. A): sparse residual convolution operator
blocks on the sampled lattice points around a grid network (a U-Net, or the FNO ablation) at a fixed resolution,
joined by k-NN interpolation (points -> grid) and bilinear interpolation (grid -> points).

Points are values (B, m, C) at distinct flat indices (B, m) into an H x W lattice over [-1, 1]^2 with pixel-centre
coordinates (as `datamodules.fields.Grid`); any H x W with the training aspect works: kernels are resized by
r = H / H_train (networks.sparse_conv) and the grid network is unchanged.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.fields import Grid
from networks.embeddings import timestep_embedding
from networks.sparse_conv import (check_kernel_size, resize_kernel, resized_kernel_size, sparse_conv,
                                  support_normaliser)
from networks.unet import UNet


def lattice_coords(index: Tensor, shape: tuple[int, int]) -> Tensor:
    """(B, m, 2) pixel-centre coordinates (row, col) in [-1, 1] of flat lattice indices (B, m)."""
    rows, cols = index // shape[1], index % shape[1]
    return torch.stack([(2 * rows + 1) / shape[0] - 1, (2 * cols + 1) / shape[1] - 1], dim=-1).float()


def knn_interpolate(values: Tensor, coords: Tensor, queries: Tensor, k: int, chunk: int = 1 << 22) -> Tensor:
    """Points (B, m, C) at coords (B, m, 2) read at queries (B, q, 2): each query gets the inverse-squared-distance
    weighted mean of its k nearest points (PointNet++ Eq. 2; weights without gradient, values with): (B, q, C)."""
    batch, num_points, channels = values.shape
    if k > num_points:
        raise ValueError(f"k-NN interpolation with k={k} needs at least {k} points per field, got {num_points}; "
                         f"lower method.net.knn or sample more points")
    rows_per_chunk = max(1, chunk // max(1, batch * num_points))
    out = []
    for start in range(0, queries.shape[1], rows_per_chunk):  # chunks bound the (B, queries, m) distance table
        with torch.no_grad():
            distance = torch.cdist(queries[:, start:start + rows_per_chunk], coords) ** 2
            nearest, which = distance.topk(k, dim=-1, largest=False)
            weights = 1.0 / nearest.clamp(min=1e-16)
            weights = weights / weights.sum(-1, keepdim=True)
        neighbours = torch.gather(values, 1, which.reshape(batch, -1, 1).expand(-1, -1, channels))
        out.append((neighbours.view(batch, -1, k, channels) * weights.unsqueeze(-1).to(values.dtype)).sum(2))
    return torch.cat(out, dim=1)


def knn_to_grid(values: Tensor, coords: Tensor, grid_size: int, k: int, chunk: int = 1 << 22) -> Tensor:
    """Points (B, m, C) at coords (B, m, 2) -> a (B, C, G, G) grid by k-NN interpolation at its nodes."""
    batch, _, channels = values.shape
    nodes = Grid((grid_size, grid_size)).coords().to(values.device).expand(batch, -1, -1)
    grid = knn_interpolate(values, coords, nodes, k, chunk)
    return grid.transpose(1, 2).reshape(batch, channels, grid_size, grid_size)


def grid_to_points(grid: Tensor, coords: Tensor, legacy_grid_sample: bool = False) -> Tensor:
    """A (B, C, G, G) grid read bilinearly at coords (B, m, 2): (B, m, C). By default between the grid's pixel
    centres (edge values beyond them); `legacy_grid_sample` reproduces the official code, which passes (row, col)
    in [0, 1] to grid_sample with zero padding (it reads one quadrant, transposed)."""
    if not legacy_grid_sample:
        return Grid(tuple(grid.shape[-2:])).interpolate(grid, coords.to(grid.dtype))
    sample_at = ((coords + 1) / 2).unsqueeze(1).to(grid.dtype)
    values = F.grid_sample(grid, sample_at, mode="bilinear", padding_mode="zeros", align_corners=False)
    return values[:, :, 0].transpose(1, 2)


KERNELS = ("linear", "nonlinear")


class SparseConvResBlock(nn.Module):
    """LN -> FiLM(t) -> sparse conv / support normaliser -> residual; LN -> FiLM(t) -> MLP -> residual (App. A; the
    official TorchsparseResBlock). A skip input is concatenated and projected first. Without a time embedding (an
    encoder) there is neither normalisation nor modulation, as in the official code.

    depthwise: the paper's depthwise kernel (false: Table 2's "Regular Convs", C x C per offset); kernel "linear"
    (Eq. 20) or "nonlinear" (Table 2's spatially nonlinear kernel: conv -> GELU -> conv, each normalised);
    latent_dim > 0: the diffusion autoencoder's latent z scales both modulated inputs by (1 + MLP(z)) (official)."""

    def __init__(self, channels: int, kernel_size: int, emb_channels: Optional[int], mlp_mult: int = 2,
                 mlp_layers: int = 2, skip: bool = False, depthwise: bool = True, kernel: str = "linear",
                 latent_dim: int = 0):
        super().__init__()
        check_kernel_size(kernel_size, "method.net.kernel_size")
        if mlp_layers < 2:
            raise ValueError(f"method.net.mlp_layers={mlp_layers}: the block's MLP needs at least 2 linear layers")
        if kernel not in KERNELS:
            raise ValueError(f"unknown method.net.kernel {kernel!r}; valid: {', '.join(KERNELS)}")
        self.skip = nn.Linear(2 * channels, channels) if skip else None
        in_per_out = 1 if depthwise else channels
        # torchsparse's init: Kaiming-uniform over fan C k^2 (a = sqrt 5), not F.conv2d's depthwise fan k^2
        bound = 1.0 / math.sqrt(channels * kernel_size**2)
        self.weights = nn.ParameterList([
            nn.Parameter(torch.empty(channels, in_per_out, kernel_size, kernel_size).uniform_(-bound, bound))
            for _ in range(2 if kernel == "nonlinear" else 1)])
        hidden = mlp_mult * channels
        layers: list[nn.Module] = [nn.Linear(channels, hidden)]
        for _ in range(mlp_layers - 2):
            layers += [nn.GELU(), nn.Linear(hidden, hidden)]
        self.mlp = nn.Sequential(*layers, nn.GELU(), nn.Linear(hidden, channels))
        self.conditioned = emb_channels is not None
        if self.conditioned:
            self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(2)])
            self.films = nn.ModuleList([nn.Sequential(nn.GELU(), nn.Linear(emb_channels, 2 * channels))
                                        for _ in range(2)])
        self.latent_scales = nn.ModuleList([
            nn.Sequential(nn.Linear(latent_dim, channels), nn.GELU(), nn.Linear(channels, channels))
            for _ in range(2)]) if latent_dim else None

    def _modulate(self, x: Tensor, emb: Optional[Tensor], z: Optional[Tensor], which: int) -> Tensor:
        if not self.conditioned:
            return x
        scale, shift = self.films[which](emb).unsqueeze(1).chunk(2, dim=-1)
        x = self.norms[which](x) * (1 + scale) + shift
        return x if self.latent_scales is None else x * (1 + self.latent_scales[which](z).unsqueeze(1))

    def forward(self, x: Tensor, emb: Optional[Tensor], conv, skip: Optional[Tensor] = None,
                z: Optional[Tensor] = None) -> Tensor:
        """x (B, m, C); conv(h, weight) -> the normalised sparse convolution of h at these points; z (B, latent)."""
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], dim=-1))
        h = conv(self._modulate(x, emb, z, 0), self.weights[0])
        for weight in self.weights[1:]:
            h = conv(F.gelu(h), weight)
        x = x + h
        return x + self.mlp(self._modulate(x, emb, z, 1))


class SpectralConv2d(nn.Module):
    """FNO's Fourier layer (Li et al. 2021): a learned complex multiplier on the lowest `modes` x `modes`
    frequencies (both signs of the row frequency) of a real 2-D FFT."""

    def __init__(self, channels: int, modes: int):
        super().__init__()
        self.modes = modes
        scale = 1.0 / channels
        self.weight = nn.Parameter(scale * torch.randn(2, channels, channels, modes, modes, dtype=torch.cfloat))

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        modes_h, modes_w = min(self.modes, height // 2), min(self.modes, width // 2 + 1)
        spectrum = torch.fft.rfft2(x.float())
        out = torch.zeros_like(spectrum)
        for side, rows in enumerate((slice(0, modes_h), slice(height - modes_h, height))):
            out[:, :, rows, :modes_w] = torch.einsum("bixy,ioxy->boxy", spectrum[:, :, rows, :modes_w],
                                                     self.weight[side, :, :, :modes_h, :modes_w])
        return torch.fft.irfft2(out, s=(height, width)).to(x.dtype)


class FNOGrid(nn.Module):
    """The spectral grid network of the ablation ("U-shaped FNO", Sec. 5): residual Fourier layers, each
    GELU(spectral conv + 1x1 conv + time shift), at the grid resolution."""

    def __init__(self, channels: int, image_size: int, emb_channels: int, num_layers: int = 4, modes: int = 16):
        super().__init__()
        self.image_size = image_size
        self.spectral = nn.ModuleList([SpectralConv2d(channels, modes) for _ in range(num_layers)])
        self.pointwise = nn.ModuleList([nn.Conv2d(channels, channels, 1) for _ in range(num_layers)])
        self.time = nn.ModuleList([nn.Linear(emb_channels, channels) for _ in range(num_layers)])
        self.emb_channels = emb_channels

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.emb_channels).to(x.dtype)
        for spectral, pointwise, time in zip(self.spectral, self.pointwise, self.time):
            x = x + F.gelu(spectral(x) + pointwise(x) + time(emb)[:, :, None, None])
        return x


class SparseDownsampleNet(nn.Module):
    """Table 2's "Sparse Downsample" (Sec. 5: downsampling by randomly subsetting coordinates instead of
    interpolating to a grid): the grid network replaced by levels of sparse blocks on repeatedly subsampled points.
    Level l keeps a random quarter of level l - 1's points (per field, without replacement) and convolves them
    with taps 2^l lattice cells apart; the up path k-NN interpolates each level back onto the points above it and
    joins that level's skip. Channels grid_channels x channel_mults, num_res_blocks blocks per level and way."""

    def __init__(self, channels: int, channel_mults, num_res_blocks: int, block: dict, knn: int):
        super().__init__()
        self.knn = knn
        widths = [channels * mult for mult in channel_mults]
        self.down_proj = nn.ModuleList([nn.Linear(a, b) for a, b in zip([channels] + widths[:-1], widths)])
        self.down = nn.ModuleList([nn.ModuleList([SparseConvResBlock(width, **block) for _ in range(num_res_blocks)])
                                   for width in widths])
        self.up_proj = nn.ModuleList([nn.Linear(b, a) for a, b in zip(widths[:-1], widths[1:])])
        self.up = nn.ModuleList([nn.ModuleList([SparseConvResBlock(width, **block, skip=i == 0)
                                                for i in range(num_res_blocks)]) for width in widths[:-1]])
        self.out_proj = nn.Linear(widths[0], channels)

    def forward(self, x: Tensor, index: Tensor, shape: tuple[int, int], emb: Tensor, z: Optional[Tensor],
                conv_for) -> Tensor:
        """x (B, m, channels) at lattice `index` (B, m); conv_for(index, dilation) -> the level's conv."""
        levels = []
        for level, (project, blocks) in enumerate(zip(self.down_proj, self.down)):
            if level:
                keep = max(self.knn, index.shape[1] // 4)
                chosen = torch.rand(index.shape, device=index.device).argsort(dim=1)[:, :keep]
                index, x = index.gather(1, chosen), x.gather(1, chosen.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = project(x)
            conv = conv_for(index, 2**level)
            for block in blocks:
                x = block(x, emb, conv, z=z)
            levels.append((x, index))
        for level in reversed(range(len(self.up))):
            skip, above = levels[level]
            below = lattice_coords(levels[level + 1][1], shape)
            x = self.up_proj[level](knn_interpolate(x, below, lattice_coords(above, shape), self.knn))
            conv = conv_for(above, 2**level)
            for i, block in enumerate(self.up[level]):
                x = block(x, emb, conv, skip if i == 0 else None, z=z)
        return self.out_proj(x)


class UNetEncoder(UNet):
    """The grid U-Net's down path and middle (the DiffAE encoder's grid part, official UNOEncoder), mean-pooled over
    the grid: (B, C, G, G) -> (B, C_middle). Unconditioned: the time embedding of t = 0 is a learned bias."""

    def __init__(self, **unet):
        super().__init__(out_channels=1, **unet)
        del self.output_blocks, self.out
        self.out_channels = self.middle_block[-1].out_layers[-1].out_channels

    def forward(self, x: Tensor) -> Tensor:
        t = torch.zeros(x.shape[0], device=x.device)
        emb = self.time_embed(timestep_embedding(t, self.base_channels).to(x.dtype))
        for block in self.input_blocks:
            x = block(x, emb)
        return self.middle_block(x, emb).mean(dim=(-2, -1))


class SparseEncoder(nn.Module):
    """The diffusion autoencoder's encoder (Sec. 5 "the first half of our proposed architecture", official
    SparseEncoder): clean values at lattice points -> linear -> unconditioned sparse blocks -> k-NN to the grid ->
    U-Net down path and middle -> mean pool -> MLP -> z (B, latent_dim)."""

    def __init__(self, signal_dim: int, latent_dim: int, channels: int, num_blocks: int, block: dict,
                 grid_size: int, grid_channels: int, grid: Optional[dict], knn: int):
        super().__init__()
        self.grid_size, self.knn = grid_size, knn
        self.linear_in = nn.Linear(signal_dim, channels)
        self.blocks = nn.ModuleList([SparseConvResBlock(channels, emb_channels=None, **block)
                                     for _ in range(num_blocks)])
        self.to_grid = nn.Linear(channels, grid_channels)
        self.grid = UNetEncoder(in_channels=grid_channels, image_size=grid_size, **(grid or {}))
        self.to_latent = nn.Sequential(nn.Linear(self.grid.out_channels, latent_dim), nn.GELU(),
                                       nn.Linear(latent_dim, latent_dim))

    def forward(self, values: Tensor, coords: Tensor, conv) -> Tensor:
        x = self.linear_in(values)
        for block in self.blocks:
            x = block(x, None, conv)
        return self.to_latent(self.grid(knn_to_grid(self.to_grid(x), coords, self.grid_size, self.knn)))


class SparseUNO(nn.Module):
    """f_theta(x_t(c), t) at lattice points c: (official `SparseUNet`)

    linear_in -> num_blocks sparse blocks (skips kept) -> linear to grid_channels -> k-NN to a grid_size^2 grid ->
    grid network -> bilinear back to the points -> linear -> num_blocks sparse blocks taking the skips in reverse
    order -> linear_out.

    train_size: the training lattice side H_train (kernels are sized in its pixels); grid_type: "unet" (`grid`:
    `networks.unet.UNet` arguments) or "fno" (the spectral ablation; `fno`: `FNOGrid` arguments); depthwise, kernel:
    see SparseConvResBlock. latent_dim > 0 adds the diffusion autoencoder's `encoder` (SparseEncoder, same sizes,
    `grid` U-Net) whose z (`encode`) every sparse block of the denoiser is conditioned on. downsample "grid" (the
    paper's k-NN to the grid network) or "sparse" (Table 2's SparseDownsampleNet, sized by `grid`'s channel_mults
    and num_res_blocks).
    """

    def __init__(self, signal_dim: int, out_dim: int, train_size: int, channels: int = 64, num_blocks: int = 3,
                 kernel_size: int = 7, mlp_mult: int = 2, mlp_layers: int = 2, time_channels: int = 256,
                 grid_size: int = 128, grid_channels: int = 128, grid_type: str = "unet", grid: Optional[dict] = None,
                 fno: Optional[dict] = None, knn: int = 3, backend: str = "dense_scatter",
                 legacy_grid_sample: bool = False, depthwise: bool = True, kernel: str = "linear",
                 latent_dim: int = 0, downsample: str = "grid"):
        super().__init__()
        if downsample not in ("grid", "sparse"):
            raise ValueError(f"unknown method.net.downsample {downsample!r}; valid: grid, sparse")
        self.downsample = downsample
        if latent_dim < 0:
            raise ValueError(f"method.net.latent_dim={latent_dim} must be >= 0 (0: no diffusion autoencoder)")
        self.latent_dim = latent_dim
        self.train_size, self.kernel_size = train_size, check_kernel_size(kernel_size, "method.net.kernel_size")
        self.grid_size, self.knn, self.backend = grid_size, knn, backend
        self.legacy_grid_sample, self.time_channels = legacy_grid_sample, time_channels
        self.linear_in = nn.Linear(signal_dim, channels)
        self.time_embed = nn.Sequential(nn.Linear(time_channels, time_channels), nn.GELU(),
                                        nn.Linear(time_channels, time_channels))
        block = dict(kernel_size=kernel_size, mlp_mult=mlp_mult, mlp_layers=mlp_layers, depthwise=depthwise,
                     kernel=kernel)
        conditioned_block = dict(block, emb_channels=time_channels, latent_dim=latent_dim)
        self.down = nn.ModuleList([SparseConvResBlock(channels, **conditioned_block) for _ in range(num_blocks)])
        self.up = nn.ModuleList([SparseConvResBlock(channels, **conditioned_block, skip=True)
                                 for _ in range(num_blocks)])
        self.encoder = SparseEncoder(signal_dim, latent_dim, channels, num_blocks, block, grid_size, grid_channels,
                                     grid, knn) if latent_dim else None
        self.to_grid = nn.Linear(channels, grid_channels)
        self.from_grid = nn.Linear(grid_channels, channels)
        if downsample == "sparse":
            self.grid = SparseDownsampleNet(grid_channels, (grid or {}).get("channel_mults", (1,)),
                                            (grid or {}).get("num_res_blocks", 1), conditioned_block, knn)
        elif grid_type == "unet":
            self.grid = UNet(in_channels=grid_channels, out_channels=grid_channels, image_size=grid_size,
                             **(grid or {}))
        elif grid_type == "fno":
            self.grid = FNOGrid(grid_channels, grid_size, time_channels, **(fno or {}))
        else:
            raise ValueError(f"unknown method.net.grid_type {grid_type!r}; valid: unet, fno")
        self.linear_out = nn.Linear(channels, out_dim)

    def _conv(self, index: Tensor, shape: tuple[int, int], dtype: torch.dtype, dilation: int = 1):
        """conv(h, weight): the normalised sparse convolution at these points, kernels resized to this lattice."""
        ratio = shape[0] / self.train_size
        size = resized_kernel_size(self.kernel_size, ratio)
        normaliser = support_normaliser(index, shape, size, self.kernel_size, dilation).to(dtype)

        def conv(h: Tensor, weight: Tensor) -> Tensor:
            return sparse_conv(h, index, shape, resize_kernel(weight, ratio), self.backend, dilation) / normaliser

        return conv

    def encode(self, values: Tensor, index: Tensor, shape: tuple[int, int]) -> Tensor:
        """The latent z (B, latent_dim) of clean values (B, m, signal_dim) at lattice `index` (B, m)."""
        if self.encoder is None:
            raise ValueError("this network has no encoder (method.net.latent_dim=0); set latent_dim > 0 to train "
                             "the diffusion autoencoder")
        return self.encoder(values, lattice_coords(index, shape), self._conv(index, shape, values.dtype))

    def forward(self, values: Tensor, index: Tensor, shape: tuple[int, int], t: Tensor,
                z: Optional[Tensor] = None) -> Tensor:
        """values (B, m, signal_dim) at lattice `index` (B, m) of an H x W lattice; t (B,); z (B, latent_dim) when
        latent_dim > 0 -> (B, m, out_dim)."""
        if (z is None) != (self.latent_dim == 0):
            raise ValueError(f"the denoiser with latent_dim={self.latent_dim} takes "
                             f"{'a latent z (B, latent_dim)' if self.latent_dim else 'no latent z'}")
        conv = self._conv(index, shape, values.dtype)
        emb = self.time_embed(timestep_embedding(t, self.time_channels).to(values.dtype))
        x = self.linear_in(values)
        skips = []
        for block in self.down:
            x = block(x, emb, conv, z=z)
            skips.append(x)
        if self.downsample == "sparse":
            x = self.from_grid(self.grid(self.to_grid(x), index, shape, emb, z,
                                         lambda at, dilation: self._conv(at, shape, values.dtype, dilation)))
        else:
            coords = lattice_coords(index, shape)
            grid = self.grid(knn_to_grid(self.to_grid(x), coords, self.grid_size, self.knn), t)
            x = self.from_grid(grid_to_points(grid, coords, self.legacy_grid_sample))
        for block in self.up:
            x = block(x, emb, conv, skips.pop(), z=z)
        return self.linear_out(x)
