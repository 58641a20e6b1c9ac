"""The SampleMetric callback logs an extractor-named metric from rank 0 on its epochs only."""
import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from datamodules.datamodule import FieldDataModule
from datamodules.fields import FieldBatch
from datamodules.images import ImageGrid
from datamodules.sources.digits import Digits
from lightning_modules.callbacks.sample_metric import SampleMetric


class ReplaySampler(L.LightningModule):
    """Trains a dummy parameter; `sample` returns the first real training fields plus seeded noise."""

    def __init__(self, noise: float):
        super().__init__()
        self.scale, self.noise, self.calls = nn.Parameter(torch.ones(())), noise, []

    def training_step(self, batch: FieldBatch, batch_idx: int):
        return (self.scale * batch.values).square().mean()

    def validation_step(self, batch: FieldBatch, batch_idx: int):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def sample(self, num_samples, generator=None, resolution=None):
        self.calls.append(self.trainer.current_epoch)
        dataset = self.trainer.datamodule.datasets["train"]
        values = torch.stack([dataset[i] for i in range(num_samples)])
        values = values + self.noise * torch.randn(values.shape, generator=generator)
        return FieldBatch.from_values(values.clamp(-1, 1), self.trainer.datamodule.domain)


def _fit(tmp_path, noise):
    datamodule = FieldDataModule(ImageGrid(Digits()), batch_size=32, max_items=400)
    model = ReplaySampler(noise)
    callback = SampleMetric("digits", metric="fid", every_n_epochs=2, num_samples=64, max_reference=200,
                            extractor_kwargs={"epochs": 2})
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[callback], num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodule)
    return model.calls, float(trainer.callback_metrics["sample/fid[digits-cnn]"])


def test_sample_metric_logs_on_its_epochs_and_tracks_quality(tmp_path):
    calls, clean = _fit(tmp_path, noise=0.0)
    assert calls == [1]  # epochs are 0-based: the 2nd epoch only
    _, noisy = _fit(tmp_path, noise=1.0)
    assert np.isfinite(clean) and 0 <= clean < noisy


def test_sample_metric_rejects_unknown_metrics():
    with pytest.raises(ValueError, match="valid: fid, kid, is, precision_recall, confidence"):
        SampleMetric("digits", metric="bpd")
