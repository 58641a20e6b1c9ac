"""Shared LitModule machinery of the diffusion methods (DDPM, DPF): the diffusion object, t sampling, samplers."""
from __future__ import annotations

from typing import Callable, Hashable, Optional

import torch
from hydra.utils import instantiate

from lightning_modules.base import FieldGenerativeModule
from lightning_modules.diffusion import GaussianDiffusion


class DiffusionMethod(FieldGenerativeModule):
    """A method whose network denoises signals under one shared `GaussianDiffusion`.

    `sampler` picks the default sampler: {name: ancestral | ddim, steps: null (all T) | int | "ddimN", eta,
    clip_denoised}; any key can be overridden per call of `sample`.
    """

    channel_dim: int = 1  # where a learned-variance output doubles the channels
    structural_hparams = ("domain", "signal_dim", "net", "diffusion")

    def __init__(self, diffusion: dict, sampler: dict, **kwargs):
        super().__init__(**kwargs)
        self.diffusion_cfg = diffusion
        self.diffusion: GaussianDiffusion = self.build_diffusion()
        self.sampler_cfg = dict(sampler)
        self._respaced: dict = {}

    def build_diffusion(self, **process) -> GaussianDiffusion:
        """The configured diffusion, with `process` settings a subclass adds (operator, decode, noise_scale)."""
        return instantiate(self.diffusion_cfg, num_levels=self.num_levels, channel_dim=self.channel_dim, **process)

    def process_for(self, key: Hashable) -> GaussianDiffusion:
        """The process to sample with under `key` (a method whose operator depends on e.g. the resolution overrides
        this; the key None is always the trained process)."""
        raise NotImplementedError(f"{type(self).__name__} samples the trained process only (process key None)")

    @property
    def out_channels(self) -> int:
        """Network output channels: the signal, twice when the variance is learned."""
        return self.signal_dim * (2 if self.diffusion.learns_variance else 1)

    def sample_timesteps(self, batch_size: int) -> torch.Tensor:
        return torch.randint(0, self.diffusion.num_timesteps, (batch_size,), device=self.device)

    def sampling_diffusion(self, steps, process: Hashable = None) -> GaussianDiffusion:
        """The diffusion to sample with: the trained one (or `process_for(process)`), respaced to `steps` (each
        built once)."""
        if (steps, process) not in self._respaced:
            base = self.diffusion if process is None else self.process_for(process)
            self._respaced[steps, process] = base if steps in (None, base.num_timesteps) else base.respaced(steps)
        return self._respaced[steps, process]

    def run_sampler(self, denoise_fn: Callable, shape: tuple[int, ...], generator: Optional[torch.Generator] = None,
                    progress: bool = False, process: Hashable = None, noise: Optional[torch.Tensor] = None,
                    start_step: Optional[int] = None, **overrides) -> torch.Tensor:
        cfg = {**self.sampler_cfg, **overrides}
        unknown = set(cfg) - {"name", "steps", "eta", "clip_denoised"}
        if unknown:
            raise ValueError(f"unknown sampler options {sorted(unknown)}; valid: name, steps, eta, clip_denoised")
        diffusion = self.sampling_diffusion(cfg.get("steps"), process)
        return diffusion.sample(denoise_fn, shape, sampler=cfg.get("name", "ancestral"), eta=cfg.get("eta", 0.0),
                                clip_denoised=cfg.get("clip_denoised", True), generator=generator,
                                progress=progress, device=self.device, noise=noise, start_step=start_step)
