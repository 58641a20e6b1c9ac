"""Optional training callback: every N epochs, on rank 0 only, sample a few images and log a cheap image metric
(e.g. "sample/fid[digits-cnn]").

It relies only on the method-independent contract: `sample(num_samples, generator=..., **sampler) -> FieldBatch`
of values in [-1, 1] (from the EMA weights when a weight-averaging callback holds them, as SampleGrid), and the
FieldDataModule's `field_maker` (`to_raw`, `num_levels`) and `split_indices()`.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Callable, Optional

import lightning as L
import numpy as np

from evaluation.extractors import FeatureExtractor, default_extractor_name, get_extractor
from evaluation.reference_stats import as_uint8_images
from evaluation.sample_metrics import check_metrics, score_samples
from datamodules.fields import FieldBatch
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

    def _reference(self, datamodule) -> tuple[str, Callable[[], np.ndarray]]:
        """A split key that pins the exact reference indices (for the cache) and a loader of those images."""
        items, indices = datamodule.split_indices()[self.reference_split]
        indices = np.asarray(indices)[: self.max_reference]
        digest = hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest()[:8]
        num_levels = datamodule.field_maker.num_levels
        load = lambda: as_uint8_images([items[int(i)] for i in indices], num_levels)  # noqa: E731
        return f"{self.reference_split}-{digest}", load

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._extractor is None:  # may train a classifier: not inside validation
            self._extractor = get_extractor(self.extractor_name, device=pl_module.device, **self.extractor_kwargs)

    def on_samples(self, trainer: L.Trainer, pl_module: L.LightningModule, fields: FieldBatch) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "field_maker"):
            raise RuntimeError("SampleMetric needs a FieldDataModule (with field_maker) passed to trainer.fit")
        if self._extractor is None:
            self._extractor = get_extractor(self.extractor_name, device=pl_module.device, **self.extractor_kwargs)
        maker, resolution = datamodule.field_maker, tuple(fields.domain.shape)
        if resolution != tuple(maker.domain.shape):  # sampled at another resolution: decode there, resize the reference
            maker = maker.at_resolution(resolution)
        else:
            resolution = None
        images = maker.to_raw(fields.values.float().cpu().numpy())
        split, load_reference = self._reference(datamodule)
        scores = score_samples(images, self.dataset, [self.metric], self._extractor, load_reference=load_reference,
                               split=split, resolution=resolution, num_levels=maker.num_levels or 256,
                               kid_subset_size=min(1000, self.num_samples))
        for name, value in scores.items():
            pl_module.log(self.prefix + name, value, rank_zero_only=True, sync_dist=False)
        log.info("epoch %d sample metrics: %s", trainer.current_epoch, scores)
