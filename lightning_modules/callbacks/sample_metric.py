"""Optional training callback: every N epochs, on rank 0 only, sample a few fields and log a cheap sample metric
(e.g. "sample/fid[digits-cnn]") through the same scoring path as experiments/evaluate.py
(evaluation.field_scores.score_generated), from the EMA weights when a weight-averaging callback holds them.
"""
from __future__ import annotations

import logging
from typing import Optional

import lightning as L

from datamodules.fields import FieldBatch
from evaluation.extractors import FeatureExtractor, default_extractor_name, get_extractor
from evaluation.field_scores import score_generated
from evaluation.sample_metrics import check_metrics
from lightning_modules.callbacks.periodic_sampling import PeriodicSampling

log = logging.getLogger(__name__)


class SampleMetric(PeriodicSampling):
    """Scores `num_samples` fixed-seed samples against at most `max_reference` images of the datamodule's
    `reference_split` with `metric` on `extractor` (None: the default of `dataset`, which also keys the cache);
    see PeriodicSampling for when."""

    def __init__(self, dataset: str, metric: str = "fid", every_n_epochs: int = 10, num_samples: int = 256,
                 extractor: Optional[str] = None, reference_split: str = "train",
                 max_reference: Optional[int] = 2000, seed: int = 0, sampler: Optional[dict] = None,
                 extractor_kwargs: Optional[dict] = None, prefix: str = "sample/"):
        check_metrics([metric])
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 for a sample metric, got {num_samples}")
        super().__init__(num_samples, seed, every_n_epochs, sampler)
        self.dataset, self.metric = dataset, metric
        self.extractor_name = extractor or default_extractor_name(dataset)
        self.extractor_kwargs = dict(extractor_kwargs or {})
        self.reference_split, self.max_reference, self.prefix = reference_split, max_reference, prefix
        self._extractor: Optional[FeatureExtractor] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._extractor is None:  # may train a classifier: not inside validation
            self._extractor = get_extractor(self.extractor_name, device=pl_module.device, **self.extractor_kwargs)

    def on_samples(self, trainer: L.Trainer, pl_module: L.LightningModule, fields: FieldBatch) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "field_maker"):
            raise RuntimeError("SampleMetric needs a FieldDataModule (with field_maker) passed to trainer.fit")
        if self._extractor is None:
            self._extractor = get_extractor(self.extractor_name, device=pl_module.device, **self.extractor_kwargs)
        scores = score_generated(fields.values.float().cpu(), fields.domain, datamodule, [self.metric],
                                 reference_split=self.reference_split, max_reference=self.max_reference,
                                 extractor=self._extractor, kid_subset_size=min(1000, self.num_samples),
                                 seed=self.seed)
        for name, value in scores.items():
            pl_module.log(self.prefix + name, value, rank_zero_only=True, sync_dist=False)
        log.info("epoch %d sample metrics: %s", trainer.current_epoch, scores)
