"""ModelCheckpoint that also saves at the final step, so a finished run's last.ckpt holds every step it trained."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class FinalStepCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint saves only every `every_n_train_steps`; this one also saves when training reaches
    `max_steps` or its last epoch (before the EMA callback copies the averaged weights into the model at fit end,
    so the checkpoint keeps the raw weights to resume from)."""

    def _save_final(self, trainer: L.Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer) or self._last_global_step_saved == trainer.global_step:
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save_final(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1:
            self._save_final(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.fast_dev_run:  # Lightning's own writes last.ckpt at the end even under fast_dev_run
            super().on_train_end(trainer, pl_module)
