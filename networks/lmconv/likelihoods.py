"""Per-pixel output distributions of the locally masked PixelCNN over data on L levels in [-1, 1]
(x_l = -1 + 2 l / (L - 1)): the discretised mixture of logistics of PixelCNN++ (Salimans et al. 2017) for any L,
grey or RGB with its linear channel coupling, and the 2-way softmax of binarised data.

`log_prob(params, x)` (B, H, W) is log p of each pixel (all its channels) in nats; `sample(params, ...)` draws
pixels on the level grid. The logistic bin masses are computed as
log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(-expm1(b - a)), exact in float32 where the
naive difference loses up to ~11 nats in the tails.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor on the logistic log-scales


def to_levels(x: Tensor, num_levels: int) -> Tensor:
    """Values in [-1, 1] -> the nearest level index 0..L-1 (long)."""
    return torch.round((x.clamp(-1, 1) + 1) * ((num_levels - 1) / 2)).long()


def from_levels(levels: Tensor, num_levels: int) -> Tensor:
    return levels.float() * (2.0 / (num_levels - 1)) - 1.0


def check_on_grid(x: Tensor, num_levels: int) -> None:
    """ValueError unless every value of x is one of the L levels in [-1, 1]."""
    off = (x - from_levels(to_levels(x, num_levels), num_levels).to(x.dtype)).abs() > 1e-4
    off |= x.abs() > 1 + 1e-6
    if off.any():
        raise ValueError(f"{int(off.sum())} values (e.g. {float(x[off][0]):.6f}) are not on the {num_levels}-level "
                         f"grid of [-1, 1] (-1 + 2 l / {num_levels - 1}): the likelihood of discrete data needs "
                         "quantised inputs; check data.field_maker.num_levels against the method's data")


def _gumbel_argmax(logits: Tensor, dim: int, generator: Optional[torch.Generator]) -> Tensor:
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1 - 1e-7)
    return torch.argmax(logits - torch.log(-torch.log(uniform)), dim=dim)


class DiscretizedLogisticMixture:
    """Mixture of `num_mixtures` discretised logistics per pixel. Grey (1 channel): 3 parameters per component
    (logit, mean, log-scale); RGB (3 channels): 10 (logit, 3 means, 3 log-scales, 3 coupling coefficients:
    mean_G += c0 x_R, mean_B += c1 x_R + c2 x_G)."""

    def __init__(self, channels: int, num_levels: int, num_mixtures: int = 10):
        if channels not in (1, 3):
            raise ValueError(f"the discretised logistic mixture models grey (1) or RGB (3) pixels, got {channels} "
                             "channels")
        if num_levels < 2:
            raise ValueError(f"discrete data need at least 2 levels, got num_levels={num_levels}")
        self.channels, self.num_levels, self.num_mixtures = channels, num_levels, num_mixtures
        self.half_bin = 1.0 / (num_levels - 1)

    @property
    def num_params(self) -> int:
        return self.num_mixtures * (3 if self.channels == 1 else 10)

    def _split(self, params: Tensor):
        if params.shape[1] != self.num_params:
            raise ValueError(f"a {self.num_mixtures}-component mixture over {self.channels}-channel pixels needs "
                             f"{self.num_params} parameters per pixel, the network gives {params.shape[1]}")
        n, c = self.num_mixtures, self.channels
        batch, _, height, width = params.shape
        logits = params[:, :n]
        rest = params[:, n:]
        means = rest[:, :c * n].reshape(batch, c, n, height, width)
        log_scales = rest[:, c * n:2 * c * n].reshape(batch, c, n, height, width).clamp(min=MIN_LOG_SCALE)
        coeffs = torch.tanh(rest[:, 2 * c * n:].reshape(batch, c, n, height, width)) if c == 3 else None
        return logits, means, log_scales, coeffs

    @staticmethod
    def _coupled_means(means: Tensor, coeffs: Optional[Tensor], x: Tensor) -> Tensor:
        """Per-channel means (B, C, n, H, W) given the pixel's earlier channels x (B, C, 1, H, W)."""
        if coeffs is None:
            return means
        return torch.stack([means[:, 0], means[:, 1] + coeffs[:, 0] * x[:, 0],
                            means[:, 2] + coeffs[:, 1] * x[:, 0] + coeffs[:, 2] * x[:, 1]], 1)

    def _bin_log_mass(self, x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
        """log P(bin of x) under each logistic: (B, C, n, H, W)."""
        inv_scale = torch.exp(-log_scales)
        upper = inv_scale * (x - means + self.half_bin)  # a
        lower = inv_scale * (x - means - self.half_bin)  # b
        log_cdf_upper = -F.softplus(-upper)  # log sigmoid(a)
        log_survival_lower = -F.softplus(lower)  # log sigmoid(-b)
        gap = lower - upper  # = -2 half_bin / s < 0
        # log(-expm1(gap)); for |gap| tiny (huge scales) its first-order form, which cannot underflow to log 0
        log_width = torch.where(gap > -1e-5, math.log(2 * self.half_bin) - log_scales,
                                torch.log(-torch.expm1(gap.clamp(max=-1e-5))))
        middle = log_cdf_upper + log_survival_lower + log_width
        return torch.where(x < -1 + self.half_bin / 2, log_cdf_upper,
                           torch.where(x > 1 - self.half_bin / 2, log_survival_lower, middle))

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(pixel) (B, H, W) in nats of x (B, C, H, W) on the level grid."""
        logits, means, log_scales, coeffs = self._split(params)
        x = x.unsqueeze(2)
        means = self._coupled_means(means, coeffs, x)
        per_component = self._bin_log_mass(x, means, log_scales).sum(1)  # (B, n, H, W)
        return torch.logsumexp(per_component + torch.log_softmax(logits, 1), 1)

    def sample(self, params: Tensor, generator: Optional[torch.Generator] = None, mixture_temperature: float = 1.0,
               logistic_temperature: float = 1.0) -> Tensor:
        """Pixels (B, C, H, W) on the level grid: a component from softmax(logits / mixture_temperature), then each
        channel from its logistic with the scale times logistic_temperature, rounded to the nearest level."""
        logits, means, log_scales, coeffs = self._split(params)
        component = _gumbel_argmax(logits / mixture_temperature, 1, generator)  # (B, H, W)
        pick = lambda t: torch.gather(t, 2, component[:, None, None].expand(-1, t.shape[1], 1, -1, -1)).squeeze(2)  # noqa
        means, scales = pick(means), pick(log_scales).exp() * logistic_temperature
        coeffs = pick(coeffs) if coeffs is not None else None
        pixel = torch.zeros_like(means)
        for c in range(self.channels):  # channels in turn: G and B depend on the sampled R (and G)
            mean = means[:, c]
            if c == 1:
                mean = mean + coeffs[:, 0] * pixel[:, 0]
            elif c == 2:
                mean = mean + coeffs[:, 1] * pixel[:, 0] + coeffs[:, 2] * pixel[:, 1]
            u = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-5, 1 - 1e-5)
            value = mean + scales[:, c] * (torch.log(u) - torch.log1p(-u))
            pixel[:, c] = from_levels(to_levels(value, self.num_levels), self.num_levels).to(pixel.dtype)
        return pixel


class BinarySoftmax:
    """A 2-way softmax per channel for binarised data (levels -1 and 1): 2 logits per channel."""

    def __init__(self, channels: int, num_levels: int = 2):
        if num_levels != 2:
            raise ValueError(f"the binary softmax models binarised data (2 levels), the data has {num_levels}; use "
                             "the discretised logistic mixture (method.likelihood=dmol) or binarised data")
        self.channels, self.num_levels = channels, 2

    @property
    def num_params(self) -> int:
        return 2 * self.channels

    def _log_softmax(self, params: Tensor) -> Tensor:
        if params.shape[1] != self.num_params:
            raise ValueError(f"a binary softmax over {self.channels}-channel pixels needs {self.num_params} "
                             f"parameters per pixel, the network gives {params.shape[1]}")
        batch, _, height, width = params.shape
        return torch.log_softmax(params.view(batch, self.channels, 2, height, width), 2)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        levels = to_levels(x, 2).unsqueeze(2)
        return torch.gather(self._log_softmax(params), 2, levels).squeeze(2).sum(1)

    def sample(self, params: Tensor, generator: Optional[torch.Generator] = None, mixture_temperature: float = 1.0,
               logistic_temperature: float = 1.0) -> Tensor:
        """Pixels in {-1, 1} from softmax(logits / mixture_temperature) (the logistic temperature has no role)."""
        choice = _gumbel_argmax(self._log_softmax(params) / mixture_temperature, 2, generator)
        return from_levels(choice, 2).to(params.dtype)


LIKELIHOODS = {"dmol": DiscretizedLogisticMixture, "binary": BinarySoftmax}
