"""DDPM (Ho, Jain, Abbeel 2020; thesis ch. 3): a U-Net denoiser on the dense pixel grid."""
from __future__ import annotations

from typing import Optional

import torch
from hydra.utils import instantiate

from datamodules.fields import Domain, FieldBatch
from evaluation.likelihood import LikelihoodModel
from evaluation.protocol import Capabilities
from lightning_modules.base import DomainNotSupportedError
from lightning_modules.diffusion_method import DiffusionMethod


class DDPM(DiffusionMethod, LikelihoodModel):
    """`loss = module.compute_losses(batch)`, `module.sample(n)`; square images only."""

    method_name = "ddpm"
    capabilities = Capabilities(domains=("grid2d",), likelihood="bound")
    channel_dim = 1

    def __init__(self, net: dict, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.net = instantiate(net, in_channels=self.signal_dim, out_channels=self.out_channels,
                               image_size=self.domain.shape[0])

    @classmethod
    def check_domain(cls, domain: Domain) -> None:
        super().check_domain(domain)
        if domain.shape[0] != domain.shape[1]:
            raise DomainNotSupportedError(f"DDPM's U-Net needs square images, got a grid of shape "
                                          f"{list(domain.shape)}; resize the data (data.field_maker.resolution=N)")

    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        x0 = batch.to_dense()
        return self.diffusion.training_losses(self.net, x0, self.sample_timesteps(x0.shape[0]))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False, **sampler_overrides) -> FieldBatch:
        domain = self.sampling_domain(resolution)
        shape = (num_samples, self.signal_dim, *domain.shape)
        x0 = self.run_sampler(self.net, shape, generator=generator, progress=progress, **sampler_overrides)
        return FieldBatch.from_dense(x0, domain)

    @torch.no_grad()
    def bits_per_dim(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        """Per-sample variational bound in bits/dim with its per-timestep terms (Ho et al. Eq. 5, Table 6.2)."""
        return self.diffusion.calc_bpd_loop(self.net, batch.to_dense(), clip_denoised=True)
