import math

import numpy as np
import pytest
import torch
from torch import nn

from datamodules.fields import FieldBatch, Grid, Sphere
from diffusion_references import closed_form
from lightning_modules.base import CapabilityError, DomainNotSupportedError
from lightning_modules.diffusion import GaussianDiffusion
from lightning_modules.ddpm import DDPM

TINY_UNET = {"_target_": "networks.unet.UNet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
             "attention_resolutions": [4], "num_groups": 4}


def make_ddpm(domain=Grid((8, 8)), net=TINY_UNET, num_levels=17, **diffusion):
    torch.manual_seed(0)
    return DDPM(net=net, diffusion={"_target_": "lightning_modules.diffusion.GaussianDiffusion",
                                    "num_timesteps": 8, **diffusion},
                sampler={"name": "ancestral"}, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
                domain=domain.spec(), signal_dim=1, num_levels=num_levels)


def digit_like_batch(levels: int = 17, seed: int = 1) -> FieldBatch:
    """Three 8x8 fields quantised to `levels` levels on [-1, 1], with no symmetry a transpose would keep."""
    values = torch.randint(0, levels, (3, 64, 1), generator=torch.Generator().manual_seed(seed)) / (levels - 1) * 2 - 1
    return FieldBatch.from_values(values, Grid((8, 8)))


class TanhDenoiser(nn.Module):
    """An x0 network with outputs inside (-1, 1), so that clipping pred_x0 (the bits/dim loop's) changes nothing."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Parameter(torch.tensor(0.05))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x) + self.time * t.to(x.dtype)[:, None, None, None])


def test_losses_samples_and_bits_per_dim():
    model = make_ddpm(variance_type="learned_range", loss_type="hybrid")
    assert model.out_channels == 2  # mean and variance outputs
    batch = FieldBatch.from_values(torch.rand(3, 64, 1) * 2 - 1, Grid((8, 8)))
    losses = model.compute_losses(batch)
    assert set(losses) >= {"loss", "mse", "vb"} and losses["loss"].shape == (3,)
    out = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert out.values.shape == (2, 64, 1) and out.is_full and out.values.abs().max() <= 1
    ddim = model.sample(2, generator=torch.Generator().manual_seed(0), name="ddim", steps=4)
    assert ddim.values.shape == (2, 64, 1)
    bpd = model.bits_per_dim(batch)
    assert bpd["total_bpd"].shape == (3,) and bpd["vb"].shape == (3, 8) and (bpd["total_bpd"] > 0).all()
    assert all(torch.isfinite(terms).all() for terms in bpd.values())


def test_grid_only_method_refuses_other_domains_at_config_time():
    # the lists come from the registry's declared capabilities
    with pytest.raises(DomainNotSupportedError, match=r"methods that accept 'sphere': \[[^]]*'dpf'"):
        make_ddpm(domain=Sphere((8, 8)))
    with pytest.raises(DomainNotSupportedError, match=r"methods that accept 'grid3d': \[[^]]*'dpf'"):
        make_ddpm(domain=Grid((8, 8, 8)))
    with pytest.raises(DomainNotSupportedError, match="square images"):
        make_ddpm(domain=Grid((8, 4)))
    with pytest.raises(CapabilityError, match=r"resolution-free sampling needs one of \[[^]]*'dpf'"):
        make_ddpm().sample(1, resolution=16)
    with pytest.raises(ValueError, match="unknown sampler options"):
        make_ddpm().sample(1, step=3)


@pytest.mark.parametrize("diffusion", [{}, {"variance_type": "learned_range", "loss_type": "hybrid"}])
def test_compute_losses_is_training_losses_on_the_dense_batch(monkeypatch, diffusion):
    model = make_ddpm(**diffusion)
    g = torch.Generator().manual_seed(4)
    for parameter in model.net.parameters():  # the U-Net's zero-initialised output would ignore its input
        parameter.data = torch.randn(parameter.shape, generator=g) * 0.2
    batch = digit_like_batch()
    t = torch.tensor([0, 3, 7])
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(model, "sample_timesteps", lambda batch_size: t)
    monkeypatch.setattr(torch, "randn_like", lambda x: noise)
    losses = model.compute_losses(batch)
    monkeypatch.undo()
    x0 = batch.values.reshape(3, 8, 8, 1).permute(0, 3, 1, 2)  # row-major points -> (B, C, H, W)
    expected = model.diffusion.training_losses(model.net, x0, t, noise=noise)
    assert set(losses) == set(expected) and all(torch.equal(losses[key], expected[key]) for key in expected)
    if not diffusion:  # L_simple by hand: eps-MSE at x_t = sqrt(a_bar) x0 + sqrt(1 - a_bar) eps
        alpha_bar = torch.from_numpy(closed_form(model.diffusion.betas)["alpha_bar"])[t].float()[:, None, None, None]
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        torch.testing.assert_close(losses["loss"], (model.net(x_t, t) - noise).pow(2).mean(dim=(1, 2, 3)))


def test_bits_per_dim_use_the_configured_num_levels():
    """Only the decoder term L_0 depends on the quantisation: wider bins (17 levels) cost fewer bits."""
    batch = digit_like_batch()
    terms = {}
    for levels in (17, 256):
        model = make_ddpm(num_levels=levels)
        assert model.diffusion.num_levels == levels
        torch.manual_seed(3)  # the same noise draws for both
        terms[levels] = model.bits_per_dim(batch)
    coarse, fine = terms[17], terms[256]
    torch.testing.assert_close(coarse["vb"][:, 1:], fine["vb"][:, 1:])
    torch.testing.assert_close(coarse["prior_bpd"], fine["prior_bpd"])
    assert (coarse["vb"][:, 0] < fine["vb"][:, 0] - 1).all()
    assert (coarse["total_bpd"] < fine["total_bpd"]).all()


def test_bits_per_dim_terms_against_independent_references(monkeypatch):
    """L_T against the closed-form KL(N(sqrt(a_bar_T) x0, 1 - a_bar_T) || N(0, 1)); each L_t (t >= 1) against the
    KL of two Gaussians of variance beta~_t whose means differ by coef1_t (x0 - x0_hat); every column against
    training_losses(loss_type="kl") at the same t and noise."""
    model = make_ddpm(net={"_target_": f"{__name__}.TanhDenoiser"}, prediction_type="x0").eval()
    batch = digit_like_batch()
    x0 = batch.to_dense().double()
    model.double()
    draws = []
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *args, **kwargs: draws.append(real_randn(*args, **kwargs)) or draws[-1])
    bpd = model.bits_per_dim(FieldBatch.from_values(batch.values.double(), batch.domain))
    monkeypatch.undo()
    num_timesteps = model.diffusion.num_timesteps
    assert len(draws) == num_timesteps and bpd["vb"].shape == (3, num_timesteps)
    reference = closed_form(model.diffusion.betas)
    alpha_bar_T = reference["alpha_bar"][-1]
    prior = 0.5 * (alpha_bar_T * x0**2 + (1 - alpha_bar_T) - 1 - math.log(1 - alpha_bar_T))
    torch.testing.assert_close(bpd["prior_bpd"], prior.mean(dim=(1, 2, 3)) / math.log(2))
    kl_diffusion = GaussianDiffusion(num_timesteps=num_timesteps, prediction_type="x0", loss_type="kl", num_levels=17)
    for step, noise in enumerate(draws):
        t = torch.full((3,), step)
        alpha_bar = reference["alpha_bar"][step]
        x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * noise
        with torch.no_grad():
            vb = kl_diffusion.training_losses(model.net, x0, t, noise=noise)["vb"]
            x0_hat = model.net(x_t, t)
        torch.testing.assert_close(bpd["vb"][:, step], vb)
        if step > 0:
            mean_gap = reference["coef_x0"][step] * (x0 - x0_hat)
            kl = (mean_gap**2 / (2 * reference["posterior_variance"][step])).mean(dim=(1, 2, 3)) / math.log(2)
            torch.testing.assert_close(bpd["vb"][:, step], kl)
    torch.testing.assert_close(bpd["total_bpd"], bpd["vb"].sum(1) + bpd["prior_bpd"])
