"""Closed forms of the Gaussian diffusion (Ho et al. 2020 Eqs. 3.4, 3.6-3.7), written independently of the code."""
from typing import Optional

import numpy as np
import torch


def closed_form(betas: np.ndarray) -> dict:
    alphas = 1.0 - betas
    alpha_bar = np.cumprod(alphas)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    return {
        "alpha_bar": alpha_bar,
        "alpha_bar_prev": alpha_bar_prev,
        "coef_x0": np.sqrt(alpha_bar_prev) * betas / (1.0 - alpha_bar),
        "coef_xt": np.sqrt(alphas) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar),
        "posterior_variance": (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * betas,
    }


def column(values: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast against a (B, ...) tensor of `ndim` dimensions."""
    return torch.from_numpy(values)[t].reshape(-1, *([1] * (ndim - 1)))


def exact_denoiser(prediction_type: str, x0: torch.Tensor, betas: np.ndarray, eps: Optional[torch.Tensor] = None):
    """A denoise_fn(x_t, t) that returns the true target of its prediction type for the clean values x0.

    eps: the noise x_t was made with; None derives it from x_t, e = (x_t - sqrt(a_bar) x0) / sqrt(1 - a_bar) (the
    exact denoiser of data holding the single datum x0, at any x_t). Targets: eps, x0, v = sqrt(a_bar) eps -
    sqrt(1 - a_bar) x0, mu~ = coef_x0 x0 + coef_xt x_t. t is an index of the process of `betas` (the original one
    when sampling a respaced process: the network sees the original indices).
    """
    reference = closed_form(betas)

    def denoise_fn(x_t, t):
        alpha_bar = column(reference["alpha_bar"], t, x_t.ndim)
        clean = x0.expand_as(x_t)
        noise = (x_t - alpha_bar.sqrt() * clean) / (1 - alpha_bar).sqrt() if eps is None else eps
        if prediction_type == "eps":
            return noise
        if prediction_type == "x0":
            return clean
        if prediction_type == "v":
            return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean
        return column(reference["coef_x0"], t, x_t.ndim) * clean + column(reference["coef_xt"], t, x_t.ndim) * x_t

    return denoise_fn
