"""Bad input and faults: clear errors at config time, NaN losses, checkpoints from another config."""
from pathlib import Path

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


def test_a_resumed_checkpoint_that_would_run_code_is_refused_before_training(make_cfg, tmp_path):
    from payloads import write_payload_checkpoint
    from lightning_modules.checkpointing import UnsafeCheckpointError

    cfg = make_cfg("experiment=ddpm_tiny")
    write_payload_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", tmp_path / "code-ran")
    with pytest.raises(UnsafeCheckpointError, match="last.ckpt holds Python objects"):
        train(cfg)
    assert not (tmp_path / "code-ran").exists()


def test_resume_false_on_a_run_dir_with_checkpoints_is_refused_naming_run_name(make_cfg):
    from lightning_modules.checkpointing import RunDirectoryInUseError

    cfg = make_cfg("experiment=ddpm_tiny", "test=false")
    train(cfg)
    before = sorted(p.name for p in (Path(cfg.paths.output_dir) / "checkpoints").iterdir())
    with pytest.raises(RunDirectoryInUseError, match=r"resume=false.*run_name=<new name>"):
        train(make_cfg("experiment=ddpm_tiny", "test=false", "resume=false"))
    assert sorted(p.name for p in (Path(cfg.paths.output_dir) / "checkpoints").iterdir()) == before


def test_files_left_by_a_kill_while_saving_are_removed_at_the_next_start(make_cfg):
    cfg = make_cfg("experiment=ddpm_tiny", "test=false")
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step_0000006.ckpt"]
    (checkpoints / "last.ckpt.tmp").write_bytes(b"half a checkpoint")
    (checkpoints / "step_0000004.ckpt").write_bytes((checkpoints / "step_0000006.ckpt").read_bytes())
    train(make_cfg("experiment=ddpm_tiny", "test=false", "trainer.max_steps=8"))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step_0000008.ckpt"]
