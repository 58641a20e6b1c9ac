"""Bad input and faults: clear errors at config time, NaN losses, checkpoints from another config."""
import pytest
import torch
from hydra.errors import MissingConfigException

from experiments.train import train
from lightning_modules.build import build
from lightning_modules.base import DomainNotSupportedError, NonFiniteLossError
from lightning_modules.checkpointing import ConfigMismatchError, read_checkpoint
from lightning_modules.ddpm import DDPM


def test_unknown_group_option_lists_the_valid_names(make_cfg):
    with pytest.raises(MissingConfigException) as error:
        make_cfg("data=cifar11")
    assert "cifar10" in str(error.value) and "digits" in str(error.value)
    with pytest.raises(MissingConfigException, match="ddpm"):
        make_cfg("method=ddpn")


def test_grid_only_method_on_sphere_fails_before_reading_data(make_cfg):
    with pytest.raises(DomainNotSupportedError, match=r"accept 'sphere': \[[^]]*'dpf'"):
        build(make_cfg("method=ddpm", "data=sphere_digits"))


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(make_cfg, monkeypatch):
    losses = DDPM.compute_losses

    def nan_from_step_3(self, batch):
        out = losses(self, batch)
        if self.training and self.global_step >= 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(DDPM, "compute_losses", nan_from_step_3)
    cfg = make_cfg("experiment=ddpm_tiny", "trainer.max_steps=10", "trainer.limit_train_batches=10",
                   "callbacks.model_checkpoint.every_n_train_steps=1")
    with pytest.raises(NonFiniteLossError, match="global step 3") as error:
        train(cfg)
    assert "last.ckpt" in str(error.value)
    last = read_checkpoint(f"{cfg.paths.output_dir}/checkpoints/last.ckpt")
    assert last["global_step"] == 3 and all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_checkpoint_of_another_config_is_a_clear_error(make_cfg):
    train(make_cfg("experiment=ddpm_tiny", "test=false"))
    with pytest.raises(ConfigMismatchError, match=r"net.base_channels: checkpoint 8, this run 16"):
        train(make_cfg("experiment=ddpm_tiny", "method.net.base_channels=16"))
    with pytest.raises(ConfigMismatchError, match="holds a lightning_modules.ddpm.DDPM model"):
        train(make_cfg("experiment=dpf_tiny"))
