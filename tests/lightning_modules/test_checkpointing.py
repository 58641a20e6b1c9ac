import pytest
import torch

from evaluation.protocol import Capabilities
from lightning_modules.checkpointing import (AtomicCheckpointIO, ConfigMismatchError, check_config_matches,
                                             read_checkpoint)
from payloads import write_payload_checkpoint


def test_atomic_save_replaces_whole_files_only(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    assert read_checkpoint(path)["global_step"] == 1
    assert not list(path.parent.glob("*.tmp"))

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # the process dies while writing

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["global_step"] == 1  # the old checkpoint is whole


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        read_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_config_mismatch_lists_the_differing_keys(tmp_path):
    class Module:
        structural_hparams = ("net", "signal_dim")
        capabilities = Capabilities(domains=("grid2d",))
        hparams = {"net": {"base_channels": 64, "channel_mults": [1, 2]}, "signal_dim": 1}

    checkpoint = {"fieldgen_method": f"{Module.__module__}.{Module.__qualname__}",
                  "hyper_parameters": {"net": {"base_channels": 32, "channel_mults": [1, 2]}, "signal_dim": 1}}
    with pytest.raises(ConfigMismatchError, match=r"net.base_channels: checkpoint 32, this run 64"):
        check_config_matches(checkpoint, Module(), "x.ckpt")
    checkpoint["hyper_parameters"]["net"]["base_channels"] = 64
    check_config_matches(checkpoint, Module(), "x.ckpt")
    checkpoint["fieldgen_method"] = "lightning_modules.dpf.DPF"
    with pytest.raises(ConfigMismatchError, match="holds a lightning_modules.dpf.DPF model"):
        check_config_matches(checkpoint, Module(), "x.ckpt")


@pytest.mark.parametrize("resolution_free", [True, False])
def test_only_a_resolution_free_method_continues_at_another_resolution(resolution_free):
    grid = "datamodules.fields.Grid"

    class Module:
        structural_hparams = ("domain", "net")
        capabilities = Capabilities(domains=("grid3d",), resolution_free=resolution_free)
        hparams = {"domain": {"_target_": grid, "shape": [32, 32, 32]}, "net": {"width": 8}}

    checkpoint = {"fieldgen_method": f"{Module.__module__}.{Module.__qualname__}",
                  "hyper_parameters": {"domain": {"_target_": grid, "shape": [8, 8, 8]}, "net": {"width": 8}}}
    if not resolution_free:
        with pytest.raises(ConfigMismatchError, match=r"domain.shape: checkpoint \[8, 8, 8\], this run \[32, 32, 32\]"):
            check_config_matches(checkpoint, Module(), "x.ckpt")
        return
    check_config_matches(checkpoint, Module(), "x.ckpt")  # a coarse-to-fine phase
    checkpoint["hyper_parameters"]["domain"]["_target_"] = "datamodules.fields.SphereGrid"
    with pytest.raises(ConfigMismatchError, match="domain._target_: checkpoint 'datamodules.fields.SphereGrid'"):
        check_config_matches(checkpoint, Module(), "x.ckpt")


def test_a_checkpoint_that_would_run_code_is_refused_and_its_code_never_runs(tmp_path):
    from lightning_modules.checkpointing import UnsafeCheckpointError, load_method

    marker = tmp_path / "code-ran"
    path = write_payload_checkpoint(tmp_path / "evil.ckpt", marker)
    for load in (read_checkpoint, load_method, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt holds Python objects .*\((io|builtins).open\)"):
            load(path)
    assert not marker.exists()
