"""A case's module and training batches, built from its composed train config the way train.py builds a run."""
from __future__ import annotations

import copy
import itertools
import logging
from typing import Optional, Sequence

import torch
from omegaconf import OmegaConf

from benchmarks.synthetic import synthetic_source_config
from datamodules.datamodule import FieldDataModule
from datamodules.fields import FieldBatch
from datamodules.sources.errors import DatasetNotFoundError
from lightning_modules.base import FieldGenerativeModule
from lightning_modules.build import build

log = logging.getLogger(__name__)


def build_run(config: dict, num_batches: int,
              synthetic_item_shape: Optional[Sequence[int]] = None) -> tuple[FieldDataModule, FieldGenerativeModule,
                                                                              bool]:
    """(datamodule, module, synthetic) of a resolved train config; when the data is absent, its source is replaced
    by random items of its shape, enough for `num_batches` training batches (synthetic=True)."""
    try:
        return (*build(OmegaConf.create(config)), False)
    except DatasetNotFoundError as err:
        config = copy.deepcopy(config)
        source = config["data"]["field_maker"]["source"]
        config["data"]["field_maker"]["source"] = synthetic_source_config(
            source, num_batches * config["data"]["batch_size"], synthetic_item_shape, str(err))
        log.info("%s: data absent, timing synthetic items of its shape", source["_target_"])
        return (*build(OmegaConf.create(config)), True)


def training_batches(datamodule: FieldDataModule, count: int, device: torch.device) -> list[FieldBatch]:
    """The first `count` training batches of the DataModule (shuffled, full batches only), on `device`; loaded
    in this process (loading is not timed: worker processes would only cost start-up)."""
    datamodule.setup("fit")
    datamodule.num_workers = 0
    batches = [batch.to(device) for batch in itertools.islice(datamodule.train_dataloader(), count)]
    if not batches:
        raise ValueError(f"the {datamodule.name} training split holds {len(datamodule.datasets['train'])} fields, "
                         f"fewer than one batch of data.batch_size={datamodule.batch_size}; lower data.batch_size")
    return batches
