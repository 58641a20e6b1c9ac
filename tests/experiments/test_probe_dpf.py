"""experiments/probe_dpf.py: x0-MSE under the right / zero / other context, and the latent statistics."""
import math
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from datamodules.fields import FieldBatch, Grid
from lightning_modules.dpf import DPF

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
from probe_dpf import probe  # noqa: E402

DOMAIN = Grid((4, 4))


class ContextMean(nn.Module):
    """x0-prediction: each query's value is the mean of the context values (uses the context only)."""

    def __init__(self, **kwargs):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, context_coords, context_values, query_coords, query_values, t):
        return self.weight * context_values.mean(1, keepdim=True).expand_as(query_values)


class OwnValue(ContextMean):
    """x0-prediction from the query's own noisy value alone (ignores the context)."""

    def forward(self, context_coords, context_values, query_coords, query_values, t):
        return self.weight * query_values


class FieldsOnly:
    """A datamodule whose test split is constant fields, one level per field."""

    def test_dataloader(self):
        levels = torch.linspace(-0.8, 0.8, 6)
        return [FieldBatch.from_values(level.view(1, 1, 1).expand(1, DOMAIN.num_points, 1), DOMAIN)
                for level in levels]


def make(net, prediction_type="x0"):
    torch.manual_seed(0)
    return DPF(net=net, point_sampler={"num_context": 8, "num_query": 16},
               diffusion={"_target_": "lightning_modules.diffusion.GaussianDiffusion", "num_timesteps": 10,
                          "prediction_type": prediction_type},
               sampler={"name": "ancestral"}, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
               domain=DOMAIN.spec(), signal_dim=1, num_levels=256).eval()


CFG = OmegaConf.create({"ckpt_path": "x", "num_fields": 5, "batch_size": 2, "timesteps": [2, 8], "num_context": None, "seed": 0})


def test_a_network_that_reads_the_context_is_hurt_by_the_wrong_one():
    numbers = probe(make({"_target_": f"{__name__}.ContextMean"}), FieldsOnly(), CFG)
    for step in (2, 8):
        assert numbers[f"x0_mse/right@t={step}"] < numbers[f"x0_mse/other@t={step}"]
        assert numbers[f"x0_mse/right@t={step}"] < numbers[f"x0_mse/zero@t={step}"]
    assert numbers["x0_mse/right@t=2"] < numbers["x0_mse/right@t=8"]  # less noise, better context


def test_a_network_that_ignores_the_context_scores_the_same_with_any():
    numbers = probe(make({"_target_": f"{__name__}.OwnValue"}), FieldsOnly(), CFG)
    assert numbers["x0_mse/right@t=8"] == numbers["x0_mse/zero@t=8"] == numbers["x0_mse/other@t=8"]
    assert "latent_spread@t=2" not in numbers  # no latents to report


def test_perceiver_reports_latent_statistics():
    net = {"_target_": "networks.score_fields.PerceiverIO", "num_latents": 4, "latent_dim": 16, "num_blocks": 1,
           "self_attends_per_block": 1, "num_decoder_blocks": 1, "coord_bands": 4, "time_bands": 8}
    numbers = probe(make(net, "eps"), FieldsOnly(), CFG)
    assert numbers["uniform_entropy"] == pytest.approx(math.log(4))
    assert 0 < numbers["latent_spread@t=8"] <= 1 and 0 < numbers["decoder_entropy@t=8"] <= math.log(4) + 1e-6
    assert 0 < numbers["encoder_reach@t=8"] <= 1 + 1e-6
    assert all(math.isfinite(value) for value in numbers.values())


def test_bad_probe_settings_raise():
    module = make({"_target_": f"{__name__}.OwnValue"})
    with pytest.raises(ValueError, match="outside the checkpoint's 0..9"):
        probe(module, FieldsOnly(), OmegaConf.merge(CFG, {"timesteps": [10]}))
    with pytest.raises(ValueError, match="gives 1 test field.*needs at least 2 fields"):
        probe(module, FieldsOnly(), OmegaConf.merge(CFG, {"num_fields": 1}))
