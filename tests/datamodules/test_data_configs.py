"""Every conf/data config instantiates through Hydra against the fake data root and loads a batch."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from datamodules.fields import FieldBatch
from datamodules.sources.errors import DatasetNotFoundError
from lightning_modules.runtime import instantiate_plainly

CONF = Path(__file__).parents[2] / "conf"
DATA_CONFIGS = sorted(path for path in (CONF / "data").glob("*.yaml") if path.stem != "image_folder")  # a base


def data_config(name: str, data_root: Path):
    """conf/data/<name> composed (its defaults applied) with paths.data_dir = data_root."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"data={name}", f"paths.data_dir={data_root}"])


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=lambda path: path.stem)
def test_data_config_instantiates_and_loads_a_batch(config, fake_data_root, monkeypatch, tmp_path):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(tmp_path / "elsewhere"))  # ignored: paths.data_dir is the one root
    cfg = data_config(config.stem, fake_data_root)
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


def test_the_data_root_is_paths_data_dir_and_the_error_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(tmp_path / "env"))
    cfg = data_config("mnist", tmp_path / "configured")
    with pytest.raises(DatasetNotFoundError, match=f"(?s){tmp_path / 'configured' / 'mnist'}.*"
                                                   f"under the data root {tmp_path / 'configured'}.*paths.data_dir=DIR"):
        instantiate_plainly(cfg.data)  # as train.py builds it: our own errors unwrapped from Hydra's
