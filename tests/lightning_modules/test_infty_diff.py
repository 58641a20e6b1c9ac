"""∞-Diff's LitModule: training on pixel subsets of the mollified process, per-resolution processes, sampling at
1x/2x/4x, completion and super-resolution, pinned seeded samples, refusals."""
import pytest
import torch
from hydra.errors import InstantiationException

from datamodules.fields import FieldBatch, Grid
from datamodules.points import HaltonSubset
from lightning_modules.diffusion.mollifier import GaussianBlur
from lightning_modules.infty_diff import InftyDiff

NET = dict(_target_="networks.sparse_operator.SparseUNO", channels=8, num_blocks=1, kernel_size=5, time_channels=16,
           grid_size=8, grid_channels=8, grid=dict(base_channels=8, channel_mults=[1], num_res_blocks=1,
                                                   attention_resolutions=[], num_groups=4))
DIFFUSION = dict(_target_="lightning_modules.diffusion.GaussianDiffusion", schedule="cosine", num_timesteps=20,
                 variance_type="fixed_small")


def make(**overrides):
    settings = dict(domain=dict(_target_="datamodules.fields.Grid", shape=[8, 8]), signal_dim=1, num_levels=17,
                    optimizer=dict(_target_="torch.optim.Adam", lr=1e-3), net=NET, diffusion=DIFFUSION,
                    sampler=dict(name="ddim", steps=5), point_subset=dict(count=0.25))
    settings.update(overrides)
    torch.manual_seed(0)
    return InftyDiff(**settings).eval()


def digits_batch(batch=4):
    g = torch.Generator().manual_seed(3)
    return FieldBatch.from_values(torch.rand(batch, 64, 1, generator=g) * 2 - 1, Grid((8, 8)))


def test_the_loss_is_on_a_quarter_of_the_pixels_of_the_mollified_process():
    module = make()
    seen = []
    net_forward = module.net.forward
    module.net.forward = lambda values, index, shape, t, z: seen.append((values, index, shape)) or net_forward(
        values, index, shape, t, z)
    losses = module.compute_losses(digits_batch())
    values, index, shape = seen[0]
    assert values.shape == (4, 16, 1) and shape == (8, 8)
    assert all(len(set(row.tolist())) == 16 for row in index)
    assert losses["loss"].shape == (4,) and torch.isfinite(losses["loss"]).all()
    assert isinstance(module.diffusion.operator, GaussianBlur) and module.diffusion.operator.std == 1.0


def test_other_resolutions_scale_the_blur_and_the_white_noise_and_keep_the_state_std():
    module = make()
    for size in (8, 16, 32):
        process = module.sampling_diffusion(5, ((size, size), 0.05))
        ratio = size / 8
        assert process.operator.std == ratio and process.decode.std == ratio and process.noise_scale == ratio
        assert process.decode.inv_snr == 0.05 and process.num_timesteps == 5
    # the prior T(r xi) has about the same per-pixel std at every resolution above the training one
    stds = [module.process_for(((size, size), 0.05))._apply_operator(
        module.process_for(((size, size), 0.05))._randn((64, 1, size, size), torch.device("cpu"), torch.float32,
                                                        torch.Generator().manual_seed(size))).std().item()
        for size in (16, 32, 64)]
    assert max(stds) / min(stds) < 1.12  # edges (reflecting boundary) weigh more on the smaller grids


@pytest.mark.parametrize("resolution", [None, 16, 32])
def test_sampling_returns_the_requested_grid(resolution):
    module = make()
    fields = module.sample(2, generator=torch.Generator().manual_seed(0), resolution=resolution)
    size = resolution or 8
    assert fields.domain.shape == (size, size) and fields.values.shape == (2, size * size, 1)
    assert fields.values.abs().max() <= 1 and torch.isfinite(fields.values).all()


def test_a_seeded_sampling_loop_gives_pinned_values():
    module = make()
    values = module.sample(2, generator=torch.Generator().manual_seed(0), inv_snr=0.5).values
    again = module.sample(2, generator=torch.Generator().manual_seed(0), inv_snr=0.5).values
    assert torch.equal(values, again)
    pinned = torch.tensor([-0.80327, -0.78819, -0.78110, -0.80155])  # seeded init, DDIM 5 of 20 steps, 8x8
    assert torch.allclose(values[0, :4, 0], pinned, atol=1e-4), values[0, :4, 0].tolist()


def test_the_inverse_snr_is_a_per_call_option():
    module = make()
    sharp = module.sample(1, generator=torch.Generator().manual_seed(0), inv_snr=0.0).values
    smooth = module.sample(1, generator=torch.Generator().manual_seed(0), inv_snr=0.5).values
    assert not torch.allclose(sharp, smooth)


def assert_completion_keeps_the_top_half(module):
    """`module.complete` on two digits whose first 32 of 64 pixels are observed returns those pixels exactly."""
    fields = digits_batch(2)
    observed = torch.zeros(2, 64, dtype=torch.bool)
    observed[:, :32] = True
    completed = module.complete(fields, observed, generator=torch.Generator().manual_seed(0))
    assert torch.equal(completed.values[:, :32], fields.values[:, :32])
    assert torch.isfinite(completed.values).all()
    return fields


def test_completion_keeps_the_observed_pixels_and_super_resolution_returns_the_larger_grid():
    module = make()
    fields = assert_completion_keeps_the_top_half(module)
    high = module.super_resolve(fields.to_dense(), 2, generator=torch.Generator().manual_seed(0))
    assert high.domain.shape == (16, 16) and torch.isfinite(high.values).all()


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_guidance_moves_the_x0_estimate_against_the_measurement_error(prediction_type):
    """A denoiser whose x0 estimate is x_t / sqrt(a_bar): the gradient of ||m (x0 - y)||^2 in x_t is
    2 m (x0 - y) / sqrt(a_bar), so guidance at scale s gives x0 - s m (x0 - y): at s = 1 the observed part is y."""
    module = make(diffusion={**DIFFUSION, "prediction_type": prediction_type})
    a = torch.as_tensor(module.diffusion.alphas_cumprod, dtype=torch.float32)
    t = torch.tensor([4, 11])
    x_t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    abar = a[t].view(-1, 1, 1, 1)
    x0 = x_t / abar.sqrt()

    def denoise(x, step):  # eps = 0, so x0 = x / sqrt(a_bar), in each parameterisation
        return {"eps": 0 * x, "x0": x / abar.sqrt(), "v": -(1 - abar).sqrt() * x / abar.sqrt()}[prediction_type]
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    target = mask * torch.rand(2, 1, 8, 8)
    for scale in (1.0, 0.5):
        out = module.guided(denoise, lambda estimate: mask * estimate, target, scale)(x_t, t)
        guided_x0 = {"eps": lambda: (x_t - (1 - abar).sqrt() * out) / abar.sqrt(), "x0": lambda: out,
                     "v": lambda: abar.sqrt() * x_t - (1 - abar).sqrt() * out}[prediction_type]()
        expected = x0 - scale * mask * (x0 - target)
        assert torch.allclose(guided_x0, expected, atol=1e-4)


def test_halton_subsets_are_distinct_lattice_points():
    module = make(point_subset=dict(count=0.5, sampler="halton"))
    assert isinstance(module.point_subset, HaltonSubset)
    index = module.point_subset.draw(3, 64, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert index.shape == (3, 32) and all(len(set(row.tolist())) == 32 for row in index)
    assert int(index.min()) >= 0 and int(index.max()) < 64


def test_bad_settings_are_refused_at_config_time():
    with pytest.raises(ValueError, match=r"method.point_subset.count=1.5 as a fraction of the field must be in \(0, 1\]"):
        make(point_subset=dict(count=1.5))
    with pytest.raises(ValueError, match="unknown method.point_subset.sampler 'sobol'"):
        make(point_subset=dict(sampler="sobol"))
    with pytest.raises(ValueError, match="std=-1.0 must be a finite number >= 0"):
        make(mollifier_std=-1.0)
    with pytest.raises(ValueError, match="inv_snr=-0.1 must be a finite number >= 0"):
        make(inv_snr=-0.1)
    with pytest.raises(ValueError, match="variance_type='learned_range' is learned, but ∞-Diff's network sees"):
        make(diffusion={**DIFFUSION, "variance_type": "learned_range", "loss_type": "hybrid"})
    with pytest.raises(InstantiationException, match="method.net.kernel_size=4 must be an odd int"):
        make(net={**NET, "kernel_size": 4})
    with pytest.raises(ValueError, match="square images"):
        make(domain=dict(_target_="datamodules.fields.Grid", shape=[8, 12]))


def autoencoder(**overrides):
    return make(net={**NET, "latent_dim": 6}, **overrides)


def test_the_autoencoder_encodes_its_own_subset_and_trains_jointly_with_separate_clipping():
    module = autoencoder().train()
    seen = []
    encode = module.net.encode
    module.net.encode = lambda values, index, shape: seen.append(index) or encode(values, index, shape)
    losses = module.compute_losses(digits_batch())
    (encoder_index,) = seen
    assert encoder_index.shape == (4, 16) and all(len(set(row.tolist())) == 16 for row in encoder_index)
    losses["loss"].mean().backward()
    assert all(p.grad is not None for p in module.net.encoder.parameters())
    for p in module.parameters():
        if p.grad is not None:
            p.grad.mul_(1e4)
    module.configure_gradient_clipping(None, gradient_clip_val=1.0)
    encoder = list(module.net.encoder.parameters())
    decoder = [p for p in module.parameters() if all(p is not q for q in encoder) and p.grad is not None]
    for group in (encoder, decoder):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in group]))
        assert abs(norm.item() - 1.0) < 1e-3


@pytest.mark.parametrize("resolution", [None, 16])
def test_the_autoencoder_decodes_latents_and_reconstructions_at_any_resolution(resolution):
    module = autoencoder()
    with pytest.raises(ValueError, match="need latents z: train its latent DDPM"):
        module.sample(2)
    fields = digits_batch(2)
    z = module.encode(fields)
    assert z.shape == (2, 6)
    size = resolution or 8
    decoded = module.sample(2, generator=torch.Generator().manual_seed(0), resolution=resolution, latents=z)
    again = module.reconstruct(fields, resolution=resolution, generator=torch.Generator().manual_seed(0))
    assert decoded.domain.shape == (size, size) and torch.equal(decoded.values, again.values)
    other = module.sample(2, generator=torch.Generator().manual_seed(0), resolution=resolution, latents=z + 1)
    assert not torch.allclose(decoded.values, other.values)  # the decoder reads z


def test_the_autoencoder_completes_from_the_observed_pixels_and_super_resolves_low_resolution_images():
    module = autoencoder()
    fields = assert_completion_keeps_the_top_half(module)
    low = torch.nn.functional.avg_pool2d(fields.to_dense(), 2)
    high = module.super_resolve(low, 4, generator=torch.Generator().manual_seed(0))
    assert high.domain.shape == (16, 16) and torch.isfinite(high.values).all()
    with pytest.raises(ValueError, match="must divide it"):
        module.super_resolve(torch.zeros(1, 1, 3, 3), 2)


def test_the_latent_ddpm_refuses_an_autoencoder_without_latents_and_untrained_statistics():
    from lightning_modules.infty_diff import InftyDiffLatent
    from networks.latent_mlp import MLPSkipNet

    stage1 = dict(_target_="lightning_modules.infty_diff.InftyDiff", net=NET, diffusion=DIFFUSION,
                  sampler=dict(name="ddim", steps=5), point_subset=dict(count=0.25),
                  optimizer=dict(_target_="torch.optim.Adam", lr=1e-3))
    settings = dict(domain=dict(_target_="datamodules.fields.Grid", shape=[8, 8]), signal_dim=1, num_levels=17,
                    optimizer=dict(_target_="torch.optim.AdamW", lr=1e-4), sampler=dict(name="ancestral"),
                    diffusion={**DIFFUSION, "schedule": "constant", "beta_end": 0.008},
                    net=dict(_target_="networks.latent_mlp.MLPSkipNet", num_layers=3, hidden=8, time_channels=8))
    with pytest.raises(ValueError, match="needs a diffusion autoencoder: set method.autoencoder.net.latent_dim"):
        InftyDiffLatent(autoencoder=stage1, **settings)
    module = InftyDiffLatent(autoencoder={**stage1, "net": {**NET, "latent_dim": 6}}, **settings)
    assert isinstance(module.net, MLPSkipNet) and not any(p.requires_grad for p in module.autoencoder.parameters())
    with pytest.raises(ValueError, match="no latent statistics yet"):
        module.sample(2)
    module.latent_std.fill_(2.0)
    assert module.sample_latents(3, generator=torch.Generator().manual_seed(0)).shape == (3, 6)
    with pytest.raises(ValueError, match="MLPSkipNet needs at least 2 layers"):
        MLPSkipNet(6, num_layers=1)
