"""DDPM (Ho, Jain, Abbeel 2020; thesis ch. 3): a U-Net denoiser on the dense pixel grid."""
from __future__ import annotations

from typing import Optional

import torch
from hydra.utils import instantiate

from datamodules.fields import FieldBatch
from lightning_modules.base import DomainNotSupportedError
from lightning_modules.diffusion_method import DiffusionMethod


class DDPM(DiffusionMethod):
    """`loss = module.compute_losses(batch)`, `module.sample(n)`; images only (2-D `Grid` domains)."""

    method_name = "ddpm"
    supported_domains = ("grid",)
    channel_dim = 1

    def __init__(self, net: dict, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if len(self.domain.shape) != 2 or self.domain.shape[0] != self.domain.shape[1]:
            raise DomainNotSupportedError(
                f"DDPM's U-Net needs square 2-D images, got a grid of shape {list(self.domain.shape)}; "
                "for 3-D voxel grids or non-square fields use method=dpf")
        self.net = instantiate(net, in_channels=self.signal_dim, out_channels=self.out_channels,
                               image_size=self.domain.shape[0])

    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        x0 = batch.to_dense()
        return self.diffusion.training_losses(self.net, x0, self.sample_timesteps(x0.shape[0]))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False, **sampler_overrides) -> FieldBatch:
        if resolution is not None and self.domain.resolve_shape(resolution) != self.domain.shape:
            raise ValueError(f"DDPM samples at its training resolution {list(self.domain.shape)} only; "
                             "resolution-free sampling needs method=dpf")
        shape = (num_samples, self.signal_dim, *self.domain.shape)
        x0 = self.run_sampler(self.net, shape, generator=generator, progress=progress, **sampler_overrides)
        return FieldBatch.from_dense(x0, self.domain)

    @torch.no_grad()
    def bits_per_dim(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        """Per-sample variational bound in bits/dim with its per-timestep terms (Ho et al. Eq. 5, Table 6.2)."""
        return self.diffusion.calc_bpd_loop(self.net, batch.to_dense(), clip_denoised=True)
