"""∞-Diff's mollifier T (Bond-Taylor & Willcocks 2023, Sec. 3.2, App. A): a Gaussian blur in the DCT domain, and
its Wiener-filter inverse.

Multiplying the orthonormal 2-D DCT-II coefficient (k_h, k_w) of an H x W image by exp(-(w_h^2 + w_w^2) s^2 / 2),
w = pi k / N, is exact Gaussian smoothing of std s pixels with reflecting (Neumann) boundaries, whose pixel i sits at
the centre (i + 1/2) / N of its cell: the heat equation run for time s^2 / 2. The DCTs are computed with torch.fft
(Makhoul's N-point FFT algorithm) in float32 or float64, outside autocast.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _dct_ii(x: Tensor, dim: int) -> Tensor:
    """Orthonormal DCT-II along `dim` (scipy.fft.dct(norm="ortho"))."""
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    reordered = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)  # even samples, then odd ones reversed
    k = torch.arange(n, device=x.device, dtype=x.dtype)
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))
    coefficients = (torch.fft.fft(reordered, dim=-1) * twiddle).real * math.sqrt(2.0 / n)
    coefficients[..., 0] = coefficients[..., 0] / math.sqrt(2.0)
    return coefficients.movedim(-1, dim)


def _dct_iii(coefficients: Tensor, dim: int) -> Tensor:
    """Inverse of `_dct_ii` (orthonormal DCT-III) along `dim`."""
    c = coefficients.movedim(dim, -1)
    n = c.shape[-1]
    half = c * math.sqrt(n / 2.0)  # back to sum_n x_n cos(pi k (2n + 1) / 2N)
    half = torch.cat([half[..., :1] * math.sqrt(2.0), half[..., 1:]], dim=-1)
    # V_k = e^{i pi k / 2N} (Y_k - i Y_{N-k}), Y_N = 0, is the FFT of the reordered samples
    mirrored = torch.cat([torch.zeros_like(half[..., :1]), half[..., 1:].flip(-1)], dim=-1)
    k = torch.arange(n, device=c.device, dtype=c.dtype)
    spectrum = torch.complex(half, -mirrored) * torch.polar(torch.ones_like(k), math.pi * k / (2 * n))
    reordered = torch.fft.ifft(spectrum, dim=-1).real
    x = torch.empty_like(reordered)
    even = (n + 1) // 2
    x[..., 0::2] = reordered[..., :even]
    x[..., 1::2] = reordered[..., even:].flip(-1)
    return x.movedim(-1, dim)


def dct2(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two axes (scipy.fft.dctn(x, axes=(-2, -1), norm="ortho"))."""
    return _dct_ii(_dct_ii(x, -1), -2)


def idct2(coefficients: Tensor) -> Tensor:
    """Inverse of `dct2`."""
    return _dct_iii(_dct_iii(coefficients, -2), -1)


def _check_nonnegative(name: str, value: float, meaning: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0 or math.isinf(value):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0 ({meaning})")
    return float(value)


class _SpectralFilter:
    """A filter diagonal in the 2-D DCT basis of (..., H, W) tensors; its gain (H, W) is built once per device."""

    def __init__(self, shape: tuple[int, int], std: float):
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"the mollifier acts on 2-D images: shape must be (H, W), got {tuple(shape)}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.std = _check_nonnegative("std", std, "the Gaussian blur's std in pixels of this resolution")
        self._gains: dict = {}

    def gaussian_gain(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """exp(-w^2 std^2 / 2) per DCT coefficient, w = pi k / N per axis."""
        rows, cols = (torch.arange(n, dtype=torch.float64) * math.pi / n for n in self.shape)
        return torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) * self.std**2 / 2).to(device, dtype)

    def gain(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"{type(self).__name__} is built for {self.shape[0]}x{self.shape[1]} images, got a "
                             f"tensor of shape {tuple(x.shape)}; build one per sampling resolution")
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # never in half precision
        key = (dtype, x.device)
        if key not in self._gains:
            self._gains[key] = self.gain(dtype, x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return idct2(dct2(x.to(dtype)) * self._gains[key]).to(x.dtype)

    def __getstate__(self):  # device tensors are a cache: rebuilt after unpickling
        return {**self.__dict__, "_gains": {}}


class GaussianBlur(_SpectralFilter):
    """T: Gaussian smoothing of std `std` pixels (of this resolution) with reflecting boundaries; std 0 is the
    identity. Linear, symmetric, and T_a T_b = T_sqrt(a^2 + b^2)."""

    def gain(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        return self.gaussian_gain(dtype, device)


class WienerDeblur(_SpectralFilter):
    """The Wiener filter of `GaussianBlur(shape, std)`: gain G / (G^2 + inv_snr^2), the least-squares inverse of T
    under white noise of relative amplitude inv_snr; inv_snr 0 is the exact inverse T^-1."""

    def __init__(self, shape: tuple[int, int], std: float, inv_snr: float = 0.05):
        super().__init__(shape, std)
        self.inv_snr = _check_nonnegative("inv_snr", inv_snr, "the Wiener filter's noise-to-signal amplitude; "
                                          "0 inverts the blur exactly, the paper's code uses 0.05")

    def gain(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        blur = self.gaussian_gain(torch.float64, device)
        return (blur / (blur**2 + self.inv_snr**2)).to(dtype)
