"""Fixed-seed sample pictures after validation: written to the run directory and to W&B when that logger is on."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from datamodules.fields import FieldBatch
from datamodules.render import render_fields
from lightning_modules.callbacks.periodic_sampling import PeriodicSampling


class SampleGrid(PeriodicSampling):
    """Saves `<dirpath>/step_<global step>.png` and `latest.png` (see PeriodicSampling for when)."""

    def __init__(self, dirpath: str, num_samples: int = 64, seed: int = 0, every_n_epochs: int = 1,
                 sampler: Optional[dict] = None):
        super().__init__(num_samples, seed, every_n_epochs, sampler)
        self.dirpath = Path(dirpath)

    def on_samples(self, trainer: L.Trainer, pl_module: L.LightningModule, fields: FieldBatch) -> None:
        image = render_fields(fields.values.float().cpu(), fields.domain)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        image.save(self.dirpath / f"step_{trainer.global_step:07d}.png")
        image.save(self.dirpath / "latest.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="samples", images=[image], step=trainer.global_step)
