"""The shared Gaussian diffusion math of DDPM, DPF and ∞-Diff: schedules, losses, samplers, respacing."""
from .gaussian_diffusion import GaussianDiffusion
from .respace import respace, space_timesteps
from .schedules import get_named_beta_schedule

__all__ = ["GaussianDiffusion", "respace", "space_timesteps", "get_named_beta_schedule"]
