"""A run's DataModule and method from its composed config (train.py, benchmarks and tests build runs this way)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from datamodules.datamodule import FieldDataModule
from lightning_modules.base import FieldGenerativeModule
from lightning_modules.runtime import instantiate_plainly


def build(cfg: DictConfig) -> tuple[FieldDataModule, FieldGenerativeModule]:
    """Datamodule and method of `cfg`; the method checks its domain here, before any data is read."""
    datamodule = instantiate_plainly(cfg.data)
    model = instantiate_plainly(cfg.method, domain=datamodule.domain.spec(), signal_dim=datamodule.signal_dim,
                                num_levels=datamodule.num_levels)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    return datamodule, model
