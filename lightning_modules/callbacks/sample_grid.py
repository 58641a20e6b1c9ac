"""Fixed-seed sample pictures after validation: written to the run directory and to W&B when that logger is on."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from datamodules.render import render_fields
from lightning_modules.callbacks.ema import averaged_module


class SampleGrid(Callback):
    """At the first validation at least `every_n_epochs` epochs after the previous grid, rank 0 draws `num_samples`
    fields from seed `seed` with the EMA weights and saves `<dirpath>/step_<global step>.png` (and `latest.png`)."""

    def __init__(self, dirpath: str, num_samples: int = 64, seed: int = 0, every_n_epochs: int = 1,
                 sampler: Optional[dict] = None):
        self.dirpath, self.num_samples, self.seed = Path(dirpath), num_samples, seed
        self.every_n_epochs, self.sampler = every_n_epochs, dict(sampler or {})
        self.last_epoch = -1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        if self.last_epoch >= 0 and trainer.current_epoch - self.last_epoch < self.every_n_epochs:
            return
        self.last_epoch = trainer.current_epoch
        module = averaged_module(trainer, pl_module)
        generator = torch.Generator(device=module.device).manual_seed(self.seed)
        fields = module.sample(self.num_samples, generator=generator, **self.sampler)
        image = render_fields(fields.values.float().cpu(), fields.domain)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        image.save(self.dirpath / f"step_{trainer.global_step:07d}.png")
        image.save(self.dirpath / "latest.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="samples", images=[image], step=trainer.global_step)
