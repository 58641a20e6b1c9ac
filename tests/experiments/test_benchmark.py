"""experiments/benchmark.py in-process on tiny nets (fp32, one repeat, no peers, no spawn), and the slope fit."""
import json
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from conftest import CONF
from experiments.benchmark import main
from lightning_modules.benchmarking import loglog_slope, run_suite

TINY = ["precisions=[fp32]", "warmup=0", "repeats=1", "peers=false", "isolate_memory=false", "device=cpu"]
SUITES = {
    "ddpm": ["ddpm.image_size=8", "ddpm.batch_size=2", "ddpm.sample_batch_size=2", "ddpm.net.base_channels=8",
             "ddpm.net.channel_mults=[1,2]", "ddpm.net.attention_resolutions=[4]", "ddpm.net.num_groups=4"],
    "dpf": ["dpf.batch_size=1", "dpf.points=[16,32]", "dpf.latents=[4,8]", "dpf.latent_sweep_points=16",
            "dpf.net.num_latents=8", "dpf.net.latent_dim=16", "dpf.net.num_blocks=1",
            "dpf.net.self_attends_per_block=1", "dpf.net.num_decoder_blocks=1", "dpf.net.num_cross_heads=2",
            "dpf.net.num_self_heads=2"],
}


def run_benchmark(tmp_path, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("benchmark", overrides=[*overrides, f"output_dir={tmp_path}"], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return main(cfg)


@pytest.mark.parametrize("suite", SUITES)
def test_suite_writes_positive_finite_measurements(tmp_path, capsys, suite):
    overrides = [f"suite={suite}", *TINY, *SUITES[suite]]
    markdown = run_benchmark(tmp_path, overrides)

    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert [(row["model"], row["precision"]) for row in record["rows"]][0] == (
        "fieldgen UNet" if suite == "ddpm" else "fieldgen PerceiverIO", "fp32")
    assert len(record["rows"]) == (1 if suite == "ddpm" else 4)
    for row in record["rows"]:
        assert row["params"] > 0
        for phase in ("train", "sample"):
            assert math.isfinite(row[f"{phase}_ms"]) and row[f"{phase}_ms"] > 0
            assert math.isfinite(row[f"{phase}_items_per_s"]) and row[f"{phase}_items_per_s"] > 0
            assert math.isfinite(row[f"{phase}_peak_mib"]) and row[f"{phase}_peak_mib"] >= 0  # in-process: >= 0
    text = markdown.read_text()
    assert text in capsys.readouterr().out
    assert "python experiments/benchmark.py suite=" in text and "torch" in text
    if suite == "dpf":
        assert (tmp_path / "benchmark.png").stat().st_size > 0
        slopes = record["slopes"][0]
        assert all(math.isfinite(slopes[f"{phase} vs {size}"]) for phase in ("train", "sample")
                   for size in ("points", "latents"))


def test_loglog_slope_recovers_the_exponent_of_a_power_law():
    x = np.array([256, 1024, 4096, 16384])
    assert loglog_slope(x, 3.0 * x**1.5) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="two distinct"):
        loglog_slope([256, 256], [1.0, 2.0])


@pytest.mark.parametrize("option, message", [({"suite": "gan"}, "unknown suite"),
                                             ({"precisions": ["fp16"]}, "precisions must be"),
                                             ({"repeats": 0}, "repeats >= 1")])
def test_bad_options_are_named(option, message):
    options = {"suite": "ddpm", "settings": {}, "device": torch.device("cpu"), **option}
    with pytest.raises(ValueError, match=message):
        run_suite(**options)
