"""Weight averages kept during training: access to the one Lightning's `EMAWeightAveraging` (or any
`WeightAveraging`) keeps, and `LastEpochsAverage`, the uniform average of the last epochs' weights."""
from __future__ import annotations

import itertools
from typing import Optional

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


class LastEpochsAverage(WeightAveraging):
    """The uniform average of the weights at the end of each of the last `num_epochs` epochs of a run of
    `trainer.max_epochs` epochs: what averaging the last N per-epoch checkpoint files gives (Jain et al. 2020 average
    their CIFAR-10 model over its last 45 epochs), kept like an EMA (in checkpoints' `state_dict`, the raw weights in
    `current_model_state`; validation, sampling and `use_ema` read it). Until its first epoch, the average is the
    current weights."""

    def __init__(self, num_epochs: int, device=None, use_buffers: bool = True):
        if num_epochs < 1:
            raise ValueError(f"LastEpochsAverage needs num_epochs >= 1, got {num_epochs}")
        super().__init__(device=device, use_buffers=use_buffers)
        self.num_epochs = num_epochs
        self.first_epoch: Optional[int] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            if trainer.max_epochs is None or trainer.max_epochs < self.num_epochs:
                raise ValueError(f"averaging the last {self.num_epochs} epochs needs trainer.max_epochs >= "
                                 f"{self.num_epochs} (the run's length in epochs), got {trainer.max_epochs}")
            self.first_epoch = trainer.max_epochs - self.num_epochs
        super().setup(trainer, pl_module, stage)

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        return False  # the average is updated at each epoch's last batch (on_train_batch_end), not by the base hooks

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # at the epoch's last batch, before the checkpoint callbacks (Lightning runs them last) save this step
        epoch = trainer.current_epoch
        if trainer.is_last_batch and epoch >= self.first_epoch and epoch > self._latest_update_epoch:
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def _follow_current_until_averaging(self, pl_module: L.LightningModule) -> None:
        # before the first averaged epoch the average would be the initial weights; it tracks the current ones
        if self._average_model is not None and int(self._average_model.n_averaged) == 0:
            average = itertools.chain(self._average_model.module.parameters(), self._average_model.module.buffers())
            for average_tensor, current in zip(average, itertools.chain(pl_module.parameters(), pl_module.buffers())):
                average_tensor.data.copy_(current.data)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._follow_current_until_averaging(pl_module)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._follow_current_until_averaging(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._follow_current_until_averaging(pl_module)  # a run stopped by max_steps before its averaged epochs
        super().on_train_end(trainer, pl_module)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)
