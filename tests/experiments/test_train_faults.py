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


def test_changed_optimiser_settings_on_resume_are_logged_and_applied(make_cfg, caplog):
    train(make_cfg("experiment=ddpm_tiny", "test=false"))
    with caplog.at_level("INFO", logger="fieldgen.train"):
        train(make_cfg("experiment=ddpm_tiny", "test=false", "trainer.max_steps=8", "method.optimizer.lr=1e-5",
                       "trainer.gradient_clip_val=0.5"))
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("changed on resume")]
    assert changes == ["changed on resume, takes effect now: method.optimizer.lr: 0.001 -> 1e-05",
                       "changed on resume, takes effect now: trainer.gradient_clip_val: 1.0 -> 0.5"]
    last = read_checkpoint(Path(make_cfg("experiment=ddpm_tiny").paths.output_dir) / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 8 and last["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-5


def diverging_from_step_4(monkeypatch, corrupt):
    """DDPM whose training losses go through `corrupt(self, losses)` from global step 4 on."""
    losses = DDPM.compute_losses

    def compute_losses(self, batch):
        out = losses(self, batch)
        return corrupt(self, out) if self.training and self.global_step >= 4 else out

    monkeypatch.setattr(DDPM, "compute_losses", compute_losses)


def assert_stopped_at_step_4_with_good_weights(error, cfg):
    assert "global step 4" in str(error.value) and "ckpt_path=" in str(error.value)
    last = read_checkpoint(f"{cfg.paths.output_dir}/checkpoints/last.ckpt")
    assert last["global_step"] == 4 and all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_a_loss_spike_stops_the_run_before_the_step_is_applied(make_cfg, monkeypatch):
    from lightning_modules.callbacks.divergence import DivergenceError

    diverging_from_step_4(monkeypatch, lambda self, out: {**out, "loss": out["loss"] * 1e6})
    cfg = make_cfg("experiment=ddpm_tiny", "trainer.max_steps=10", "trainer.limit_train_batches=10",
                   "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.divergence_guard.window=3")
    with pytest.raises(DivergenceError, match=r"over 100x the median .* of the last 3 steps") as error:
        train(cfg)
    assert_stopped_at_step_4_with_good_weights(error, cfg)


def test_non_finite_gradients_with_a_finite_loss_stop_the_run(make_cfg, monkeypatch):
    from lightning_modules.callbacks.divergence import DivergenceError

    def infinite_gradient(self, out):  # sqrt'(0) = inf: the loss is unchanged, one gradient is not finite
        weight = next(self.parameters()).flatten()[0]
        return {**out, "loss": out["loss"] + (weight - weight.detach()).sqrt()}

    diverging_from_step_4(monkeypatch, infinite_gradient)
    cfg = make_cfg("experiment=ddpm_tiny", "trainer.max_steps=10", "trainer.limit_train_batches=10",
                   "callbacks.model_checkpoint.every_n_train_steps=1")
    with pytest.raises(DivergenceError, match=r"of \d+ gradients are NaN or infinite at global step 4") as error:
        train(cfg)
    assert_stopped_at_step_4_with_good_weights(error, cfg)
