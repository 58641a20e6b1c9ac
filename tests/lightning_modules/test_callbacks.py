"""The training callbacks against what they claim: EMA by its update rule, its weights for validation, sampling and
checkpoints; the sample pictures and the loss curve written where and when they say."""
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from datamodules.fields import FieldBatch, Grid
from datamodules.render import render_fields
from lightning_modules.callbacks.checkpoint import FinalStepCheckpoint
from lightning_modules.callbacks.ema import LastEpochsAverage
from lightning_modules.callbacks.loss_curve import LossCurve
from lightning_modules.callbacks.periodic_sampling import PeriodicSampling
from lightning_modules.callbacks.sample_grid import SampleGrid

TARGET = torch.tensor([0.8, -0.6, 0.4, -0.2])
START = torch.tensor([-0.5, 0.5, 0.0, 0.9])
LR, DECAY, STEPS_PER_EPOCH = 0.1, 0.5, 2
DOMAIN = Grid((2, 2))


def raw_weight(step: int) -> torch.Tensor:
    """SGD on |w - target|^2 with lr 0.1: w_k = target + (w_0 - target) (1 - 2 lr)^k."""
    return TARGET + (START - TARGET) * (1 - 2 * LR) ** step


def ema_weight(step: int) -> torch.Tensor:
    """The EMA after `step` updates: the first copies w_1, then e_k = decay e_(k-1) + (1 - decay) w_k."""
    average = raw_weight(1)
    for k in range(2, step + 1):
        average = DECAY * average + (1 - DECAY) * raw_weight(k)
    return average


class Drifting(L.LightningModule):
    """One weight vector pulled by SGD towards TARGET; its samples are its weights as 2x2 fields."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(START.clone())
        self.in_validation: list[tuple[int, torch.Tensor]] = []
        self.dropout = nn.Dropout(0.5)  # a sampler must run in eval mode: dropout off

    def training_step(self, batch, batch_idx):
        loss = (self.weight - TARGET).square().sum()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.in_validation.append((self.global_step, self.weight.detach().clone()))
        self.log("val/loss", (self.weight - TARGET).abs().sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)

    def train_dataloader(self):
        return DataLoader(torch.zeros(STEPS_PER_EPOCH, 1), batch_size=1)

    def val_dataloader(self):
        return DataLoader(torch.zeros(1, 1), batch_size=1)

    def sample(self, num_samples, generator=None, **options):
        noise = torch.randn(num_samples, 4, 1, generator=generator) * 1e-3  # proves the seed reaches sample()
        weight = self.dropout(self.weight.detach())
        return FieldBatch.from_values(weight[None, :, None] + noise, DOMAIN)


class Recorded(PeriodicSampling):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.drawn: list[tuple[int, torch.Tensor]] = []

    def on_samples(self, trainer, pl_module, fields):
        self.drawn.append((trainer.global_step, fields.values.clone()))


def fit(tmp_path, callbacks, max_steps=6, ckpt_path=None, **trainer):
    model = Drifting()
    L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=callbacks, **trainer).fit(
        model, ckpt_path=ckpt_path)
    return model


def final_checkpoint(tmp_path):
    return FinalStepCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1000)


def expected_samples(step: int, num_samples: int, seed: int) -> torch.Tensor:
    noise = torch.randn(num_samples, 4, 1, generator=torch.Generator().manual_seed(seed)) * 1e-3
    return ema_weight(step)[None, :, None] + noise


@pytest.mark.parametrize("sampling_first", [False, True])
def test_ema_follows_its_update_rule_and_serves_validation_sampling_and_checkpoints(tmp_path, sampling_first):
    ema = EMAWeightAveraging(decay=DECAY)
    sampler = Recorded(num_samples=3, seed=7)
    checkpoint = FinalStepCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=4)
    model = fit(tmp_path, [sampler, ema, checkpoint] if sampling_first else [ema, sampler, checkpoint])
    # validation (after each epoch of 2 steps) runs on the EMA weights of that step
    assert [step for step, _ in model.in_validation] == [2, 4, 6]
    for step, weight in model.in_validation:
        torch.testing.assert_close(weight, ema_weight(step), rtol=0, atol=1e-6)
    # the samples drawn after validation come from the EMA weights too, whatever the callbacks' order
    assert [step for step, _ in sampler.drawn] == [2, 4, 6]
    for step, values in sampler.drawn:
        torch.testing.assert_close(values, expected_samples(step, 3, seed=7), rtol=0, atol=1e-6)
    # at fit end the model holds the EMA weights; the final checkpoint keeps both
    torch.testing.assert_close(model.weight.detach(), ema_weight(6), rtol=0, atol=1e-6)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 6
    torch.testing.assert_close(saved["state_dict"]["weight"], ema_weight(6), rtol=0, atol=1e-6)
    torch.testing.assert_close(saved["current_model_state"]["weight"], raw_weight(6), rtol=0, atol=1e-6)


def test_the_last_epochs_average_is_the_mean_of_their_end_weights(tmp_path):
    """4 epochs of 2 steps, averaging the last 2: validation and checkpoints before the window see the current
    weights; from the window on they see the average, and the end of the run holds (w_6 + w_8) / 2, what averaging
    the two epoch-end checkpoints gives (also when a periodic checkpoint falls on the last step)."""
    checkpoint = FinalStepCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=4, save_top_k=-1)
    model = fit(tmp_path, [LastEpochsAverage(num_epochs=2), checkpoint], max_steps=-1, max_epochs=4)
    average = (raw_weight(6) + raw_weight(8)) / 2
    expected_validation = [raw_weight(2), raw_weight(4), raw_weight(6), average]
    for (_, weight), expected in zip(model.in_validation, expected_validation, strict=True):
        torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.weight.detach(), average, rtol=0, atol=1e-6)
    early = torch.load(tmp_path / "ckpt" / "epoch=1-step=4.ckpt", weights_only=True)
    torch.testing.assert_close(early["state_dict"]["weight"], raw_weight(4), rtol=0, atol=1e-6)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(saved["state_dict"]["weight"], average, rtol=0, atol=1e-6)
    torch.testing.assert_close(saved["current_model_state"]["weight"], raw_weight(8), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs trainer.max_epochs >= 2"):
        fit(tmp_path / "short", [LastEpochsAverage(num_epochs=2)], max_steps=-1, max_epochs=1)


def test_sample_grid_writes_the_fixed_seed_samples_each_period(tmp_path):
    grid = SampleGrid(dirpath=str(tmp_path / "samples"), num_samples=2, seed=3, every_n_epochs=2)
    fit(tmp_path, [EMAWeightAveraging(decay=DECAY), grid], max_steps=8)  # 4 epochs: periods end at epochs 2, 4
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "latest.png", "step_0000004.png", "step_0000008.png"]
    for step in (4, 8):
        written = np.asarray(Image.open(tmp_path / "samples" / f"step_{step:07d}.png"))
        expected = np.asarray(render_fields(expected_samples(step, 2, seed=3), DOMAIN))
        np.testing.assert_array_equal(written, expected)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "samples" / "latest.png")), written)


def test_periodic_sampling_refuses_bad_periods():
    with pytest.raises(ValueError, match="every_n_epochs and num_samples must be >= 1"):
        Recorded(num_samples=1, every_n_epochs=0)
    with pytest.raises(ValueError, match="every_n_epochs and num_samples must be >= 1"):
        Recorded(num_samples=0)


def test_loss_curve_records_train_and_validation_losses_and_survives_a_resume(tmp_path):
    curve = LossCurve(str(tmp_path / "curve" / "loss.png"), every_n_steps=2)
    fit(tmp_path, [curve], max_steps=6)
    # training losses at the steps after which global_step % 2 == 0 (and the first), before the update
    expected_train = [(1, (raw_weight(0) - TARGET).square().sum())] + [
        (step, (raw_weight(step - 1) - TARGET).square().sum()) for step in (2, 4, 6)]
    assert [step for step, _ in curve.train] == [step for step, _ in expected_train]
    assert [loss for _, loss in curve.train] == pytest.approx([float(loss) for _, loss in expected_train])
    assert [step for step, _ in curve.val] == [2, 4, 6]
    assert [loss for _, loss in curve.val] == pytest.approx([float((raw_weight(step) - TARGET).abs().sum())
                                                             for step in (2, 4, 6)])
    image = Image.open(tmp_path / "curve" / "loss.png")
    assert image.format == "PNG" and min(image.size) > 100

    resumed = LossCurve(str(tmp_path / "curve" / "loss.png"))
    resumed.load_state_dict(curve.state_dict())
    assert resumed.train == curve.train and resumed.val == curve.val


def test_a_resumed_run_continues_the_ema_and_the_sampling_periods(tmp_path):
    first, again = Recorded(num_samples=1, every_n_epochs=2), Recorded(num_samples=1, every_n_epochs=2)
    # stopped at step 5, in epoch 2, after the period ending with epoch 1 was sampled (at step 4)
    fit(tmp_path, [EMAWeightAveraging(decay=DECAY), first, final_checkpoint(tmp_path)], max_steps=5)
    # the rest of epoch 2, epochs 3 and 4
    model = fit(tmp_path, [EMAWeightAveraging(decay=DECAY), again, final_checkpoint(tmp_path)], max_steps=10,
                ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert [step for step, _ in first.drawn] == [4] and [step for step, _ in again.drawn] == [8]
    torch.testing.assert_close(model.weight.detach(), ema_weight(10), rtol=0, atol=1e-6)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(saved["current_model_state"]["weight"], raw_weight(10), rtol=0, atol=1e-6)


def test_the_loss_curve_of_a_resumed_run_holds_both_runs(tmp_path):
    fit(tmp_path, [LossCurve(str(tmp_path / "loss.png"), every_n_steps=2), final_checkpoint(tmp_path)], max_steps=5)
    curve = LossCurve(str(tmp_path / "loss.png"), every_n_steps=2)
    fit(tmp_path, [curve, final_checkpoint(tmp_path)], max_steps=8, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert [step for step, _ in curve.train] == [1, 2, 4, 6, 8]
    assert [step for step, _ in curve.val] == [2, 4, 6, 8]
    assert [loss for _, loss in curve.train] == pytest.approx(
        [float((raw_weight(step - 1) - TARGET).square().sum()) for step in (1, 2, 4, 6, 8)])


def test_the_loss_curve_has_one_entry_per_optimiser_step_when_gradients_accumulate(tmp_path):
    curve = LossCurve(str(tmp_path / "loss.png"), every_n_steps=1)
    fit(tmp_path, [curve], max_steps=3, accumulate_grad_batches=2, limit_val_batches=0)  # 2 batches a step
    assert [step for step, _ in curve.train] == [0, 1, 2, 3]
