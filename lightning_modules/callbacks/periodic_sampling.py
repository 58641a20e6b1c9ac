"""Base of the callbacks that draw fixed-seed samples from the EMA weights after validation, on rank 0."""
from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from datamodules.fields import FieldBatch
from lightning_modules.callbacks.ema import averaged_module


class PeriodicSampling(Callback):
    """After the first validation that ends each period of `every_n_epochs` epochs, rank 0 draws `num_samples`
    fields from `seed` in eval mode (with the EMA weights when an averaging callback holds them) and passes them to
    `on_samples`. Skipped in sanity checks and fast_dev_run; other ranks go on training."""

    def __init__(self, num_samples: int, seed: int = 0, every_n_epochs: int = 1, sampler: Optional[dict] = None):
        if every_n_epochs < 1 or num_samples < 1:
            raise ValueError(f"every_n_epochs and num_samples must be >= 1, got {every_n_epochs}, {num_samples}")
        self.num_samples, self.seed, self.every_n_epochs = num_samples, seed, every_n_epochs
        self.sampler = dict(sampler or {})
        self.last_period = 0

    def on_samples(self, trainer: L.Trainer, pl_module: L.LightningModule, fields: FieldBatch) -> None:
        raise NotImplementedError

    # the last period sampled is kept in checkpoints: a resumed run does not sample again before the next period
    def state_dict(self) -> dict[str, int]:
        return {"last_period": self.last_period}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.last_period = state_dict["last_period"]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        period = (trainer.current_epoch + 1) // self.every_n_epochs
        if period <= self.last_period:
            return
        self.last_period = period
        module = averaged_module(trainer, pl_module, self)
        generator = torch.Generator(device=module.device).manual_seed(self.seed)
        was_training = module.training  # the averaged copy is never switched to eval by the Trainer
        module.eval()  # sampling without dropout
        try:
            with torch.no_grad():
                fields = module.sample(self.num_samples, generator=generator, **self.sampler)
        finally:
            module.train(was_training)
        self.on_samples(trainer, pl_module, fields)
