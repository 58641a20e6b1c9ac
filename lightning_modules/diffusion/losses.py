"""Gaussian KL and likelihood terms of the diffusion variational bound (all in nats, elementwise)."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

TensorOrFloat = Union[Tensor, float]


def mean_flat(tensor: Tensor) -> Tensor:
    """Mean over every dimension but the first (batch): (B, ...) -> (B,)."""
    return tensor.reshape(tensor.shape[0], -1).mean(dim=1)


def normal_kl(mean1: TensorOrFloat, logvar1: TensorOrFloat, mean2: TensorOrFloat, logvar2: TensorOrFloat) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, broadcasting tensors and floats."""
    reference = next((x for x in (mean1, logvar1, mean2, logvar2) if isinstance(x, Tensor)), None)
    if reference is None:
        raise TypeError("normal_kl needs at least one tensor argument")
    logvar1, logvar2 = (torch.as_tensor(x, dtype=reference.dtype, device=reference.device) for x in (logvar1, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of the standard normal CDF used by Ho et al.'s and Nichol's bits/dim numbers."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: Tensor, means: Tensor, log_scales: Tensor, num_levels: int = 256
) -> Tensor:
    """Elementwise log-probability of data quantised to num_levels levels on [-1, 1] under N(means, exp(log_scales)²).

    Each level's bin has half-width 1 / (num_levels - 1); the lowest and highest bins extend to -inf and +inf
    (Ho et al. Eq. 3.13), so the probabilities of all levels sum to one.
    """
    if not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels must be an int >= 2 (e.g. 256 for 8-bit data), got {num_levels!r}")
    if x.shape != means.shape or x.shape != log_scales.shape:
        raise ValueError(
            f"x, means and log_scales must have one shape, got {tuple(x.shape)}, {tuple(means.shape)}, "
            f"{tuple(log_scales.shape)}"
        )
    half_width = 1.0 / (num_levels - 1)
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + half_width))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - half_width))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    # edge bins are recognised half a bin inside the boundary so that rounding in x never misplaces them
    return torch.where(
        x < -1.0 + half_width,
        log_cdf_plus,
        torch.where(x > 1.0 - half_width, log_one_minus_cdf_min, log_cdf_delta),
    )


def continuous_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Elementwise log-density of continuous x under N(means, exp(log_scales)^2)."""
    normalized = (x - means) * torch.exp(-log_scales)
    return -0.5 * normalized**2 - log_scales - 0.5 * math.log(2.0 * math.pi)


def decoder_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor, num_levels: Optional[int]) -> Tensor:
    """The L_0 decoder's elementwise log-likelihood: discretised for quantised data, a density for num_levels=None."""
    if num_levels is None:
        return continuous_gaussian_log_likelihood(x, means, log_scales)
    return discretized_gaussian_log_likelihood(x, means, log_scales, num_levels=num_levels)
