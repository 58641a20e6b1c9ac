"""The loss curve of a run as a PNG at the end of training (and to W&B at that step when that logger is on); its
history lives in checkpoints, so resumes keep it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402


class LossCurve(Callback):
    """Records the training loss every `every_n_steps` steps and the validation loss per epoch."""

    def __init__(self, path: str, every_n_steps: int = 10):
        self.path, self.every_n_steps = Path(path), every_n_steps
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.train and self.train[-1][0] == trainer.global_step:
            return  # one entry per optimiser step, also when it accumulates gradients over several batches
        if trainer.global_step % self.every_n_steps == 0 or not self.train:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.train.append((trainer.global_step, float(loss)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            self.val.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.is_global_zero and self.train:
            self.plot()
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key="loss_curve", images=[str(self.path)], step=trainer.global_step)

    def plot(self) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(*zip(*self.train), label="train", lw=0.8)
        if self.val:
            ax.plot(*zip(*self.val), "o-", label="val", ms=3)
        ax.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
        ax.legend()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.path, dpi=120, bbox_inches="tight")
        plt.close(fig)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train, self.val = list(state_dict["train"]), list(state_dict["val"])
