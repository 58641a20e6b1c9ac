"""Every experiment config composes and builds; those sized for a CPU also run a fast_dev_run."""
from pathlib import Path

import pytest

from experiments.train import train
from lightning_modules.build import build

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))
# the encoder checkpoint it reads is another run's output (experiment=view_encoder_procedural): the untrained
# encoder stands in
STAND_INS = {name: ["method.semantic.encoder.ckpt_path=null"]
             for name in ("dietnerf_procedural_8v", "dietnerf_procedural_8v_one_sided")}
# it continues another run's checkpoint (experiment=dpf_primitives32_at8): from scratch here
STAND_INS["dpf_primitives32"] = ["ckpt_path=null"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds_and_cpu_ones_run(name, make_cfg):
    cfg = make_cfg(f"experiment={name}")
    datamodule, model = build(cfg)  # the method checks its domain and sizes here, before any data is read
    assert model.domain == datamodule.domain and sum(p.numel() for p in model.parameters()) > 0
    if cfg.trainer.accelerator != "cpu":
        return  # a GPU-sized recipe: building it is the CPU check
    cfg = make_cfg(f"experiment={name}", "trainer.fast_dev_run=true", *STAND_INS.get(name, []))
    metrics = train(cfg)
    assert "test/loss" in metrics and metrics["test/loss"] == metrics["test/loss"]  # finite, not NaN
