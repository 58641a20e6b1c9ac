"""FieldModule's learning-rate warm-up: the lr each optimiser step applies, step by step, also across a resume."""
import lightning as L
import pytest
import torch
from torch import nn

from datamodules.datamodule import FieldDataModule
from datamodules.images import ImageGrid
from datamodules.sources.digits import Digits
from lightning_modules.base import FieldModule
from lightning_modules.callbacks.checkpoint import FinalStepCheckpoint

BASE_LR, WARMUP = 0.1, 4


class Linear(FieldModule):
    """One weight w with loss w per field: SGD moves w by exactly -lr per step, so w's steps read the lr applied."""

    def __init__(self, lr_warmup_steps: int):
        super().__init__(domain=ImageGrid(Digits()).domain, signal_dim=1, num_levels=17,
                         optimizer={"_target_": "torch.optim.SGD", "lr": BASE_LR},
                         lr_warmup_steps=lr_warmup_steps)
        self.save_hyperparameters()
        self.weight = nn.Parameter(torch.zeros(()))

    def compute_losses(self, batch):
        return {"loss": self.weight.expand(batch.batch_size)}


class WeightTrace(L.Callback):
    def __init__(self):
        self.weights: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.weights.append(float(pl_module.weight))

    def on_train_end(self, trainer, pl_module):
        self.weights.append(float(pl_module.weight))


def fit(tmp_path, max_steps, lr_warmup_steps=WARMUP, ckpt_path=None):
    model, trace = Linear(lr_warmup_steps), WeightTrace()
    checkpoint = FinalStepCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1000)
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=tmp_path, callbacks=[trace, checkpoint])
    datamodule = FieldDataModule(ImageGrid(Digits()), batch_size=2, max_items=40)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    applied = [before - after for before, after in zip(trace.weights, trace.weights[1:])]
    return applied, trainer


def expected_lr(step: int, warmup: int = WARMUP) -> float:
    """Linear warm-up to the base lr over `warmup` steps: step k (0-based) uses base * min(1, (k + 1) / warmup)."""
    return BASE_LR * min(1.0, (step + 1) / warmup) if warmup else BASE_LR


@pytest.mark.parametrize("warmup", [0, 1, WARMUP])
def test_each_step_applies_the_warmed_up_lr(tmp_path, warmup):
    applied, trainer = fit(tmp_path, max_steps=7, lr_warmup_steps=warmup)
    assert applied == pytest.approx([expected_lr(step, warmup) for step in range(7)], rel=1e-6)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(BASE_LR)


def test_a_resumed_run_continues_the_warmup_where_it_stopped(tmp_path):
    first, _ = fit(tmp_path, max_steps=2)
    resumed, _ = fit(tmp_path, max_steps=6, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert first + resumed == pytest.approx([expected_lr(step) for step in range(6)], rel=1e-6)
