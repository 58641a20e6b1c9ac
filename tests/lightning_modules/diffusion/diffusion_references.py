"""Closed forms of the Gaussian diffusion (Ho et al. 2020 Eqs. 3.4, 3.6-3.7), written independently of the code."""
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
