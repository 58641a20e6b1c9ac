"""Every conf/data config instantiates through Hydra against the fake data root and loads a batch."""
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datamodules.fields import FieldBatch

DATA_CONFIGS = sorted((Path(__file__).parents[2] / "conf" / "data").glob("*.yaml"))


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=lambda path: path.stem)
def test_data_config_instantiates_and_loads_a_batch(config, fake_data_root, monkeypatch):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))  # the sources whose data_dir is null look there
    cfg = OmegaConf.create({"paths": {"data_dir": str(fake_data_root)}, "data": OmegaConf.load(config)})
    # the fakes hold a handful of items, and worker processes would cost a start each
    cfg.data.batch_size, cfg.data.num_workers = 2, 0
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    source = datamodule.field_maker.source
    location = getattr(source, "root", None) or getattr(source, "path", None)
    if location is not None:  # read from the fakes, not from a copy elsewhere on the machine
        assert Path(location).is_relative_to(fake_data_root)
    train, val = next(iter(datamodule.train_dataloader())), next(iter(datamodule.val_dataloader()))
    assert len(train.values) == 2
    for batch in (train, val):
        assert isinstance(batch, FieldBatch)
        assert batch.values.shape[1:] == (datamodule.domain.num_points, datamodule.signal_dim)
        assert torch.isfinite(batch.values).all() and batch.values.abs().max() <= 1
