"""FieldModule's learning-rate warm-up and schedule: the lr each optimiser step applies, step by step, also across a
resume, and a resume with a changed lr or warm-up applying the changed values."""
import math

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

    def __init__(self, lr_warmup_steps: int, lr: float = BASE_LR, momentum: float = 0.0,
                 lr_schedule: str = "constant"):
        super().__init__(domain=ImageGrid(Digits()).domain, signal_dim=1, num_levels=17,
                         optimizer={"_target_": "torch.optim.SGD", "lr": lr, "momentum": momentum},
                         lr_warmup_steps=lr_warmup_steps, lr_schedule=lr_schedule)
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


def fit(tmp_path, max_steps, lr_warmup_steps=WARMUP, ckpt_path=None, lr=BASE_LR, momentum=0.0,
        lr_schedule="constant"):
    model, trace = Linear(lr_warmup_steps, lr, momentum, lr_schedule), WeightTrace()
    checkpoint = FinalStepCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1000)
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=tmp_path, callbacks=[trace, checkpoint])
    datamodule = FieldDataModule(ImageGrid(Digits()), batch_size=2, max_items=40)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    applied = [before - after for before, after in zip(trace.weights, trace.weights[1:])]
    return applied, trainer


def expected_lr(step: int, warmup: int = WARMUP, base: float = BASE_LR) -> float:
    """Linear warm-up to the base lr over `warmup` steps: step k (0-based) uses base * min(1, (k + 1) / warmup)."""
    return base * min(1.0, (step + 1) / warmup) if warmup else base


@pytest.mark.parametrize("warmup", [0, 1, WARMUP])
def test_each_step_applies_the_warmed_up_lr(tmp_path, warmup):
    applied, trainer = fit(tmp_path, max_steps=7, lr_warmup_steps=warmup)
    assert applied == pytest.approx([expected_lr(step, warmup) for step in range(7)], rel=1e-6)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(BASE_LR)


def test_a_resumed_run_continues_the_warmup_where_it_stopped(tmp_path):
    first, _ = fit(tmp_path, max_steps=2)
    resumed, _ = fit(tmp_path, max_steps=6, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert first + resumed == pytest.approx([expected_lr(step) for step in range(6)], rel=1e-6)


@pytest.mark.parametrize("warmup", [0, WARMUP])
def test_a_lower_lr_given_on_resume_is_the_one_applied(tmp_path, warmup):
    """The checkpoint's optimiser state holds the old lr; the command's new one (warmed up where the run is) wins."""
    first, _ = fit(tmp_path, max_steps=2, lr_warmup_steps=warmup)
    resumed, trainer = fit(tmp_path, max_steps=6, lr_warmup_steps=warmup, lr=0.01,
                           ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert first == pytest.approx([expected_lr(step, warmup) for step in range(2)], rel=1e-6)
    assert resumed == pytest.approx([expected_lr(step, warmup, base=0.01) for step in range(2, 6)], rel=1e-6)
    assert trainer.lr_scheduler_configs == [] or trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.01]


def test_a_longer_warmup_given_on_resume_is_the_one_applied(tmp_path):
    first, _ = fit(tmp_path, max_steps=2, lr_warmup_steps=WARMUP)
    resumed, _ = fit(tmp_path, max_steps=6, lr_warmup_steps=10, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed == pytest.approx([expected_lr(step, warmup=10) for step in range(2, 6)], rel=1e-6)


def test_other_optimiser_settings_given_on_resume_are_applied_and_its_state_kept(tmp_path):
    fit(tmp_path, max_steps=2, lr_warmup_steps=0, momentum=0.5)
    _, trainer = fit(tmp_path, max_steps=3, lr_warmup_steps=0, momentum=0.9, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    optimizer = trainer.optimizers[0]
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["momentum_buffer"] is not None


def test_the_cosine_schedule_decays_the_warmed_up_lr_to_zero_at_max_steps(tmp_path):
    steps = 12
    applied, _ = fit(tmp_path, max_steps=steps, lr_schedule="cosine")
    expected = [expected_lr(step) * 0.5 * (1 + math.cos(math.pi * step / steps)) for step in range(steps)]
    assert applied == pytest.approx(expected, rel=1e-6, abs=1e-7)  # float32 weight differences
    assert applied[-1] < 0.03 * BASE_LR


def test_a_run_resumed_with_more_steps_follows_the_longer_cosine_from_where_it_stopped(tmp_path):
    fit(tmp_path, max_steps=5, lr_schedule="cosine")
    resumed, _ = fit(tmp_path, max_steps=10, lr_schedule="cosine", ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed == pytest.approx([expected_lr(step) * 0.5 * (1 + math.cos(math.pi * step / 10))
                                     for step in range(5, 10)], rel=1e-6, abs=1e-7)


def test_unknown_schedules_and_a_cosine_without_max_steps_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"method.lr_schedule='linear' is not one of \('constant', 'cosine'\)"):
        Linear(0, lr_schedule="linear")
    model = Linear(0, lr_schedule="cosine")
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    model.trainer = trainer
    with pytest.raises(ValueError, match=r"decays the lr to 0 at trainer.max_steps, which is -1; set "
                                         r"trainer.max_steps=N, or method.lr_schedule=constant"):
        model.lr_factor(0)
