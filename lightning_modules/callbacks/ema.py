"""Access to the EMA weights that Lightning's `EMAWeightAveraging` keeps during training."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging


def averaged_module(trainer: L.Trainer, pl_module: L.LightningModule) -> L.LightningModule:
    """The EMA copy of `pl_module` while a weight-averaging callback holds one, else `pl_module` itself.

    Sampling from the copy does not depend on the order in which callbacks swap weights around validation.
    """
    for callback in trainer.callbacks:
        # Lightning exposes no public accessor for the averaged model (lightning 2.6)
        average = getattr(callback, "_average_model", None) if isinstance(callback, WeightAveraging) else None
        if average is not None:
            return average.module
    return pl_module
