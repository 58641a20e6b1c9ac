import pytest
import torch

from datamodules.fields import FieldBatch, Grid, Sphere
from lightning_modules.base import CapabilityError, DomainNotSupportedError
from lightning_modules.ddpm import DDPM

TINY_UNET = {"_target_": "networks.unet.UNet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
             "attention_resolutions": [4], "num_groups": 4}


def make_ddpm(domain=Grid((8, 8)), **diffusion):
    torch.manual_seed(0)
    return DDPM(net=TINY_UNET, diffusion={"_target_": "lightning_modules.diffusion.GaussianDiffusion",
                                          "num_timesteps": 8, **diffusion},
                sampler={"name": "ancestral"}, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
                domain=domain.spec(), signal_dim=1, num_levels=17)


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
