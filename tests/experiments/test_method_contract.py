"""The contract every registered method passes, with no test code of its own (as diffusers' SchedulerCommonTest).

Each method ships `conf/experiment/<method_name>_tiny.yaml`, a seconds-long run; from it this file trains, resumes,
checks the EMA weights, samples, evaluates and refuses a domain the method does not declare. The slow tier kills a
run of every method and resumes it.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from conftest import CONF, ROOT, compose_train, run_entry
from datamodules.fields import FieldBatch
from experiments.evaluate import evaluate_checkpoint
from experiments.train import train
from lightning_modules import METHODS
from lightning_modules.base import CapabilityError, DomainNotSupportedError
from lightning_modules.build import build
from lightning_modules.checkpointing import load_method, read_checkpoint

# a data config on each domain kind, to show that a method refuses the kinds it does not declare
DATA_OF_KIND = {"grid2d": "digits", "grid3d": "primitives16", "sphere": "sphere_digits", "latlon": "netcdf",
                "rays": "procedural_scene"}


def test_every_method_ships_a_tiny_experiment():
    missing = [name for name in METHODS if not (CONF / "experiment" / f"{name}_tiny.yaml").is_file()]
    assert not missing, f"methods without conf/experiment/<name>_tiny.yaml: {missing}"


@pytest.fixture(scope="module", params=sorted(METHODS))
def trained(request, tmp_path_factory, fake_data_root):
    """(method name, composer of its tiny run's configs, the run's last.ckpt) after training it once."""
    name, tmp_path = request.param, tmp_path_factory.mktemp(request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))

        def make_cfg(*overrides):
            return compose_train(tmp_path, [f"experiment={name}_tiny", "test=false", *overrides])

        metrics = train(make_cfg())
        yield name, make_cfg, tmp_path / "run" / "checkpoints" / "last.ckpt", metrics


def test_a_few_training_steps_give_finite_losses(trained):
    name, make_cfg, last, metrics = trained
    losses = {key: value for key, value in metrics.items() if key.startswith("train/")}
    assert "train/loss" in losses and all(math.isfinite(value) for value in losses.values()), losses
    assert read_checkpoint(last)["global_step"] == make_cfg().trainer.max_steps


def test_a_checkpoint_reloads_and_resumes_at_its_step(trained):
    name, make_cfg, last, _ = trained
    step = read_checkpoint(last)["global_step"]
    module = load_method(last)
    assert type(module) is METHODS[name] and module.method_name == name
    train(make_cfg(f"trainer.max_steps={step + 2}"))  # the same run directory: resumes from last.ckpt
    resumed = read_checkpoint(last)
    assert resumed["global_step"] == step + 2
    assert resumed["fieldgen_config"]["trainer"]["max_steps"] == step + 2


def test_sampling_uses_the_ema_weights(trained):
    _, _, last, _ = trained
    checkpoint = read_checkpoint(last)
    ema, raw = load_method(last), load_method(last, use_ema=False)
    for key, value in ema.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][key], rtol=0, atol=0)
    assert any(not torch.equal(value, checkpoint["current_model_state"][key])
               for key, value in ema.state_dict().items() if value.is_floating_point()), "EMA equals the raw weights"
    draw = lambda module: module.sample(2, generator=torch.Generator().manual_seed(0)).values  # noqa: E731
    assert not torch.equal(draw(ema), draw(raw))


def test_sample_returns_fields_on_the_domain(trained):
    _, _, last, _ = trained
    module = load_method(last)
    fields = module.sample(3, generator=torch.Generator().manual_seed(1))
    assert isinstance(fields, FieldBatch) and fields.domain == module.domain
    assert fields.values.shape == (3, module.domain.num_points, module.signal_dim)
    assert torch.isfinite(fields.values).all() and fields.values.abs().max() <= 1 + 1e-5
    other = tuple(2 * size for size in module.domain.shape)
    if module.capabilities.resolution_free:
        fields = module.sample(2, generator=torch.Generator().manual_seed(1), resolution=other)
        assert fields.domain.shape == other and fields.values.shape == (2, math.prod(other), module.signal_dim)
    else:
        with pytest.raises(CapabilityError, match="resolution-free"):
            module.sample(2, resolution=other)


def compose_evaluate(tmp_path, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"output_dir={tmp_path}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    return cfg


def test_evaluate_runs_the_metrics_its_capabilities_imply(trained, tmp_path):
    _, _, last, _ = trained
    module = load_method(last)
    evaluate_checkpoint(compose_evaluate(tmp_path, [f"ckpt_path={last}", "num_samples=12", "batch_size=6",
                                                    "bpd_batches=1", "kid_subset_size=6", "is_splits=2",
                                                    "progress=false"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    capabilities, kind = module.capabilities, module.domain.kind
    expected = ["test/loss"]
    expected += ["test/bpd"] if capabilities.likelihood else []
    expected += ["fid[", "kid[", "is[", "precision[", "recall["] if kind in ("grid2d", "sphere") else []
    expected += ["coverage[chamfer]", "mmd[chamfer]"] if kind == "grid3d" else []
    expected += ["test/psnr", "test/ssim"] if capabilities.renders_views else []
    for prefix in expected:
        assert any(key.startswith(prefix) and metrics[key] is not None and math.isfinite(metrics[key])
                   for key in metrics), (prefix, metrics)
    # each metric in its range: distances and divergences >= 0, IS >= 1, fractions in [0, 1]
    lower = {"test/bpd": 0, "fid[": 0, "kid_std[": 0, "is_std[": 0, "mmd[": 0, "is[": 1}
    fractions = ("precision[", "recall[", "coverage[", "empty_fraction")
    for key, value in metrics.items():
        for prefix, bound in lower.items():
            assert not key.startswith(prefix) or value >= bound, (key, value)
        assert not key.startswith(fractions) or 0 <= value <= 1, (key, value)
    assert ("test/bpd" in metrics) == bool(capabilities.likelihood)
    if capabilities.renders_views:  # one render per test view, with its depth and accumulation maps
        renders = sorted(path.name for path in (tmp_path / "renders").iterdir())
        assert renders and renders == sorted(path.name for path in (tmp_path / "acc").iterdir())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_domain_it_does_not_declare_is_refused_at_config_time(name, make_cfg):
    refused = [kind for kind in DATA_OF_KIND if kind not in METHODS[name].capabilities.domains]
    if not refused:
        pytest.skip(f"{name} accepts every domain kind that has a data config here")
    with pytest.raises(DomainNotSupportedError, match=f"methods that accept '{refused[0]}'"):
        build(make_cfg(f"experiment={name}_tiny", f"data={DATA_OF_KIND[refused[0]]}"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_killed_run_resumes_from_its_last_checkpoint(name, tmp_path, fake_data_root, monkeypatch):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))
    args = [f"experiment={name}_tiny", f"paths.log_dir={tmp_path}", "run_name=killed", "trainer.limit_train_batches=50",
            "callbacks.model_checkpoint.every_n_train_steps=5", "trainer.check_val_every_n_epoch=100"]
    last = tmp_path / "train" / "runs" / "killed" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "train.py"), *args, "trainer.max_steps=100000"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not last.exists() or read_checkpoint(last)["global_step"] < 10):
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = read_checkpoint(last)["global_step"]
    assert step_at_kill >= 10

    resumed = run_entry("train.py", *args, f"trainer.max_steps={step_at_kill + 7}", "test=false")
    assert f"(global step {step_at_kill})" in resumed.stdout + resumed.stderr
    assert read_checkpoint(last)["global_step"] == step_at_kill + 7
    # the killed run's metrics are kept: the resumed run logs to the next CSV version
    assert (last.parents[1] / "csv" / "version_0" / "metrics.csv").exists()
