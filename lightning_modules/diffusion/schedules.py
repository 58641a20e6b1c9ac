"""Named beta schedules for Gaussian diffusion, computed in float64 (Ho et al. 2020; Nichol & Dhariwal 2021)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

BETA_SCHEDULES = ("linear", "cosine", "quadratic", "constant")


def get_named_beta_schedule(name: str, num_timesteps: int, **kwargs: float) -> np.ndarray:
    """The (num_timesteps,) float64 betas of a named schedule.

    - "linear": linspace(beta_start=1e-4, beta_end=0.02) exactly as Ho et al. (not rescaled by 1000 / T);
    - "cosine": Nichol & Dhariwal's squared-cosine alpha_bar with offset s=0.008, betas clipped at max_beta=0.999,
      and its log-SNR moved by logsnr_shift (Hoogeboom et al. 2023's shifted cosine; 0 is the plain one): a field
      of r^d times a base resolution's points keeps the base's SNR at the base's scale with -d ln r, since pooling
      r^d points divides the noise variance by r^d;
    - "quadratic": linspace(sqrt(beta_start), sqrt(beta_end)) squared;
    - "constant": beta_end at every step.
    """
    if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; valid names: {', '.join(BETA_SCHEDULES)}")
    if name == "cosine":
        options = _schedule_options(name, kwargs, s=0.008, max_beta=0.999, logsnr_shift=0.0)
        s, noise_odds = options["s"], math.exp(-options["logsnr_shift"])

        def alpha_bar(u: np.ndarray) -> np.ndarray:
            plain = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
            return plain / (plain + (1.0 - plain) * noise_odds)  # sigmoid(logit(plain) + logsnr_shift)

        return betas_for_alpha_bar(num_timesteps, alpha_bar, options["max_beta"])
    options = _schedule_options(name, kwargs, beta_start=1e-4, beta_end=0.02)
    beta_start, beta_end = options["beta_start"], options["beta_end"]
    if name == "linear":
        return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    if name == "quadratic":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2
    return np.full(num_timesteps, beta_end, dtype=np.float64)


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[np.ndarray], np.ndarray], max_beta: float = 0.999
) -> np.ndarray:
    """Betas discretising a continuous alpha_bar(u) on [0, 1]: beta_i = 1 - alpha_bar(u_{i+1}) / alpha_bar(u_i)."""
    u = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    alphas_bar = alpha_bar(u)
    return np.minimum(1.0 - alphas_bar[1:] / alphas_bar[:-1], max_beta)


def _schedule_options(name: str, given: dict[str, float], **defaults: float) -> dict[str, float]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"beta schedule {name!r} takes options {sorted(defaults)}, got unknown {unknown}"
        )
    return {**defaults, **{key: float(value) for key, value in given.items()}}
