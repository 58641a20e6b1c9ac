"""Access to the EMA weights that Lightning's `EMAWeightAveraging` keeps during training."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback, WeightAveraging


def averaged_module(trainer: L.Trainer, pl_module: L.LightningModule, caller: Callback) -> L.LightningModule:
    """The module holding the EMA weights when `caller` runs its on_validation_epoch_end hook (`pl_module` itself
    when no weight-averaging callback holds an average).

    The averaging callback swaps the averaged weights into `pl_module` at validation epoch start and back into its
    copy at validation epoch end, and Lightning runs a hook callback by callback in `trainer.callbacks` order: a
    caller listed before the averaging callback still finds the averaged weights in `pl_module`, one listed after
    it finds them in the copy.
    """
    callbacks = trainer.callbacks
    for callback in callbacks:
        # Lightning exposes no public accessor for the averaged model (lightning 2.6)
        average = getattr(callback, "_average_model", None) if isinstance(callback, WeightAveraging) else None
        if average is not None:
            swapped_back = callbacks.index(callback) < callbacks.index(caller)
            return average.module if swapped_back else pl_module
    return pl_module
