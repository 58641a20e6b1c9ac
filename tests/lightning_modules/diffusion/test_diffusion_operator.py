"""The operator hook: the process x_t = sqrt(a_bar) A x0 + sqrt(1 - a_bar) A eps (∞-Diff's mollified diffusion,
Bond-Taylor & Willcocks 2023, App. B) against its closed forms, with simple linear operators of our own.

References: q(x_t | x0) = N(sqrt(a_bar_t) A x0, (1 - a_bar_t) A A^T); q(x_{t-1} | x_t, x0) =
N(coef1 A x0 + coef2 x_t, beta~_t A A^T) (App. B Eq. 12); a single datum x0 is sampled as A x0 exactly.
"""
import numpy as np
import pytest
import torch

from diffusion_references import closed_form, column, exact_denoiser
from lightning_modules.diffusion import GaussianDiffusion

T = 20
F64 = torch.float64
NUM_POINTS = 6


def blur_matrix(num_points: int = NUM_POINTS, std: float = 1.0) -> torch.Tensor:
    """A row-normalised Gaussian blur on a line of points (invertible, not symmetric after normalisation)."""
    offsets = torch.arange(num_points, dtype=F64)
    kernel = torch.exp(-((offsets[:, None] - offsets[None, :]) ** 2) / (2 * std**2))
    return kernel / kernel.sum(1, keepdim=True)


BLUR = blur_matrix()


def blur(x: torch.Tensor) -> torch.Tensor:
    """A on (B, N, C) fields: the blur across the N points."""
    return torch.einsum("ij,bjc->bic", BLUR.to(x.dtype), x)


def deblur(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(BLUR.to(x.dtype), x)


SCALE = torch.linspace(0.3, 1.0, 2 * 2 * 3, dtype=F64).reshape(2, 2, 3)


def scale(x: torch.Tensor) -> torch.Tensor:
    """A on (B, C, H, W) images: a diagonal operator, one factor per mode (channel and pixel)."""
    return SCALE.to(x.dtype) * x


def unscale(x: torch.Tensor) -> torch.Tensor:
    return x / SCALE.to(x.dtype)


def covariance(samples: torch.Tensor) -> torch.Tensor:
    """The sample covariance of (n, d) draws."""
    centred = samples - samples.mean(0)
    return centred.T @ centred / (samples.shape[0] - 1)


def assert_covariance(samples: torch.Tensor, expected: torch.Tensor) -> None:
    """Each entry within 5 standard errors (Var S_ij = (S_ii S_jj + S_ij^2) / n for Gaussian draws)."""
    n = samples.shape[0]
    standard_error = ((expected.diag()[:, None] * expected.diag()[None, :] + expected**2) / n).sqrt()
    assert ((covariance(samples) - expected).abs() <= 5 * standard_error).all()


def test_q_sample_moments_per_mode_of_a_diagonal_operator():
    diffusion = GaussianDiffusion(num_timesteps=T, operator=scale)
    step, num_draws = 12, 40000
    alpha_bar = closed_form(diffusion.betas)["alpha_bar"][step]
    x0 = torch.linspace(-0.9, 0.8, 12, dtype=F64).reshape(1, 2, 2, 3)
    g = torch.Generator().manual_seed(0)
    x_t = diffusion.q_sample(x0.expand(num_draws, -1, -1, -1), torch.full((num_draws,), step),
                             noise=torch.randn(num_draws, 2, 2, 3, dtype=F64, generator=g))
    std = np.sqrt(1 - alpha_bar) * SCALE
    assert ((x_t.mean(0) - np.sqrt(alpha_bar) * SCALE * x0[0]).abs() <= 5 * std / np.sqrt(num_draws)).all()
    assert ((x_t.var(0) / std**2 - 1).abs() <= 5 * np.sqrt(2 / num_draws)).all()
    mean, variance, _ = diffusion.q_mean_variance(x0, torch.tensor([step]))
    assert torch.allclose(mean, np.sqrt(alpha_bar) * SCALE * x0, atol=1e-15)
    assert torch.allclose(variance, torch.full_like(x0, 1 - alpha_bar))  # the factor of A A^T


def test_q_sample_covariance_of_a_blur_is_one_minus_alpha_bar_times_A_A_transpose():
    diffusion = GaussianDiffusion(num_timesteps=T, operator=blur, channel_dim=-1)
    step, num_draws = 5, 40000
    alpha_bar = closed_form(diffusion.betas)["alpha_bar"][step]
    x0 = torch.tensor([-0.8, -0.2, 0.9, 0.4, -0.5, 0.1], dtype=F64).reshape(1, NUM_POINTS, 1)
    x_t = diffusion.q_sample(x0.expand(num_draws, -1, -1), torch.full((num_draws,), step),
                             noise=torch.randn(num_draws, NUM_POINTS, 1, dtype=F64,
                                               generator=torch.Generator().manual_seed(1)))[..., 0]
    expected_covariance = (1 - alpha_bar) * BLUR @ BLUR.T
    standard_error = (expected_covariance.diag() / num_draws).sqrt()
    assert ((x_t.mean(0) - np.sqrt(alpha_bar) * BLUR @ x0[0, :, 0]).abs() <= 5 * standard_error).all()
    assert_covariance(x_t, expected_covariance)


@pytest.mark.parametrize("prediction_type", ["x0", "eps", "v", "mu"])
def test_training_targets_are_the_closed_forms_in_the_operators_range(prediction_type):
    """x_t = sqrt(a_bar) A x0 + sqrt(1 - a_bar) A eps, and the targets A eps, A x0, sqrt(a_bar) A eps -
    sqrt(1 - a_bar) A x0 (not the official code's mix of mollified and raw values) and coef1 A x0 + coef2 x_t."""
    diffusion = GaussianDiffusion(num_timesteps=T, prediction_type=prediction_type, operator=blur, channel_dim=-1)
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 4, NUM_POINTS, 2, dtype=F64, generator=g)
    t = torch.tensor([0, 3, 11, T - 1])
    alpha_bar = column(closed_form(diffusion.betas)["alpha_bar"], t, 3)
    a_x0, a_noise = torch.einsum("ij,bjc->bic", BLUR, x0), torch.einsum("ij,bjc->bic", BLUR, noise)
    expected_x_t = alpha_bar.sqrt() * a_x0 + (1 - alpha_bar).sqrt() * a_noise
    target = exact_denoiser(prediction_type, a_x0, diffusion.betas, eps=a_noise)
    seen = []
    terms = diffusion.training_losses(lambda x_t, t: seen.append(x_t) or target(x_t, t), x0, t, noise=noise)
    assert torch.allclose(seen[0], expected_x_t, atol=1e-14)
    assert torch.allclose(terms["mse"], torch.zeros(4, dtype=F64), atol=1e-24)
    assert torch.allclose(diffusion.q_sample(x0, t, noise=noise), expected_x_t, atol=1e-14)


def gather_points(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


def test_a_subset_loss_mollifies_the_full_field_then_reads_the_points():
    """∞-Diff's training: A acts on the full field, the network sees x_t at a few points, the loss is on them."""
    diffusion = GaussianDiffusion(num_timesteps=T, operator=blur, channel_dim=-1)
    g = torch.Generator().manual_seed(8)
    x0, noise = torch.randn(2, 3, NUM_POINTS, 1, dtype=F64, generator=g)
    index = torch.tensor([[0, 4], [5, 1], [2, 3]])
    t = torch.tensor([1, 9, T - 1])
    alpha_bar = column(closed_form(diffusion.betas)["alpha_bar"], t, 3)
    a_x0, a_noise = torch.einsum("ij,bjc->bic", BLUR, x0), torch.einsum("ij,bjc->bic", BLUR, noise)
    seen = []
    terms = diffusion.training_losses(lambda x_t, t: seen.append(x_t) or torch.zeros_like(x_t), x0, t, noise=noise,
                                      subset=lambda values: gather_points(values, index))
    expected_x_t = alpha_bar.sqrt() * a_x0 + (1 - alpha_bar).sqrt() * a_noise
    assert torch.allclose(seen[0], gather_points(expected_x_t, index), atol=1e-14)
    assert torch.allclose(terms["mse"], gather_points(a_noise, index).pow(2).mean(dim=(1, 2)), atol=1e-14)


@pytest.mark.parametrize("settings", [dict(prediction_type="mu"), dict(loss_type="kl", prediction_type="v"),
                                      dict(loss_type="hybrid", variance_type="learned_range")])
def test_a_subset_that_permutes_every_point_leaves_every_loss_unchanged(settings):
    """Each term after x_t is elementwise, so reading all points in another order changes nothing."""
    diffusion = GaussianDiffusion(num_timesteps=T, channel_dim=-1, **settings)
    g = torch.Generator().manual_seed(9)
    x0 = torch.randint(0, 256, (3, NUM_POINTS, 1), generator=g).to(F64) / 127.5 - 1
    noise = torch.randn(3, NUM_POINTS, 1, dtype=F64, generator=g)
    order = torch.stack([torch.randperm(NUM_POINTS, generator=g) for _ in range(3)])
    channels = 2 if diffusion.learns_variance else 1

    def pointwise_net(x_t, t):
        return torch.cat([torch.tanh(x_t + 0.1 * k) for k in range(channels)], dim=-1)

    t = torch.tensor([0, 7, T - 1])
    dense = diffusion.training_losses(pointwise_net, x0, t, noise=noise)
    permuted = diffusion.training_losses(pointwise_net, x0, t, noise=noise,
                                         subset=lambda values: gather_points(values, order))
    assert set(dense) == set(permuted)
    assert all(torch.allclose(dense[key], permuted[key], atol=1e-12) for key in dense)


@pytest.mark.parametrize("prediction_type", ["x0", "eps", "v", "mu"])
@pytest.mark.parametrize("sampler", ["ancestral", "ddim_eta1"])
def test_one_reverse_step_with_an_exact_oracle_has_the_operator_posteriors_moments(prediction_type, sampler):
    """From a fixed x_t, one step has mean coef1 A x0 + coef2 x_t and covariance beta~ A A^T (Eq. 12): the
    ancestral step with fixed_small, and DDIM with eta = 1, whose sigma^2 is beta~."""
    diffusion = GaussianDiffusion(num_timesteps=T, prediction_type=prediction_type, operator=blur, channel_dim=-1)
    reference = closed_form(diffusion.betas)
    step, num_draws = 7, 40000
    x0 = torch.tensor([0.7, -0.3, 0.2, -0.9, 0.5, 0.0], dtype=F64).reshape(1, NUM_POINTS, 1)
    a_x0 = BLUR @ x0[0]
    x_t = diffusion.q_sample(x0, torch.tensor([step]), noise=torch.randn(1, NUM_POINTS, 1, dtype=F64,
                                                                         generator=torch.Generator().manual_seed(3)))
    expected_mean = reference["coef_x0"][step] * a_x0 + reference["coef_xt"][step] * x_t[0]
    t = torch.full((num_draws,), step)
    posterior_mean = diffusion.q_posterior_mean_variance(x0, x_t, t[:1])[0]
    assert torch.allclose(posterior_mean[0], expected_mean, atol=1e-12)
    oracle = exact_denoiser(prediction_type, a_x0, diffusion.betas)
    out = diffusion.p_mean_variance(oracle, x_t, t[:1], clip_denoised=False)
    assert torch.allclose(out["mean"][0], expected_mean, atol=1e-12)
    assert torch.allclose(out["pred_x0"][0], a_x0, atol=1e-12)
    generator = torch.Generator().manual_seed(4)
    if sampler == "ancestral":
        draws = diffusion.p_sample(oracle, x_t.expand(num_draws, -1, -1), t, clip_denoised=False, generator=generator)
    else:
        draws = diffusion.ddim_sample(oracle, x_t.expand(num_draws, -1, -1), t, clip_denoised=False, eta=1.0,
                                      generator=generator)
    draws = draws["sample"][..., 0]
    expected_covariance = reference["posterior_variance"][step] * BLUR @ BLUR.T
    standard_error = (expected_covariance.diag() / num_draws).sqrt()
    assert ((draws.mean(0) - expected_mean[:, 0]).abs() <= 5 * standard_error).all()
    assert_covariance(draws, expected_covariance)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_the_initial_state_is_mollified_noise(sampler):
    """x_T ~ N(0, A A^T): the first state the network sees, drawn by the sampling loop."""
    diffusion = GaussianDiffusion(num_timesteps=T, operator=blur, channel_dim=-1).respaced(2)
    first_inputs = []

    def recording_denoiser(x_t, t):
        if not first_inputs:
            first_inputs.append(x_t)
        return torch.zeros_like(x_t)

    diffusion.sample(recording_denoiser, (40000, NUM_POINTS, 1), sampler=sampler,
                     generator=torch.Generator().manual_seed(5))
    assert_covariance(first_inputs[0][..., 0].to(F64), BLUR @ BLUR.T)


@pytest.mark.parametrize("prediction_type", ["x0", "eps", "v", "mu"])
@pytest.mark.parametrize("steps", [None, 7, "ddim5"])
def test_a_single_datum_is_sampled_as_A_x0_then_decoded(prediction_type, steps):
    """Data of one datum x0: the exact denoiser predicts A x0 from any x_t, and every sampler ends at A x0
    (the final step is noiseless and has coef1 = 1, coef2 = 0); decode then maps it back to x0."""
    cases = [
        (blur, deblur, -1, torch.tensor([0.7, -0.3, 0.2, -0.9, 0.5, 0.0], dtype=F64).reshape(1, NUM_POINTS, 1)),
        (scale, unscale, 1, torch.linspace(-0.9, 0.8, 12, dtype=F64).reshape(1, 2, 2, 3)),
    ]
    for operator, decode, channel_dim, x0 in cases:
        diffusion = GaussianDiffusion(num_timesteps=T, prediction_type=prediction_type, operator=operator,
                                      decode=decode, channel_dim=channel_dim)
        a_x0 = operator(x0)
        oracle = exact_denoiser(prediction_type, a_x0, diffusion.betas)
        if steps is not None:
            diffusion = diffusion.respaced(steps)
        shape = (3, *x0.shape[1:])
        for name, kwargs in [("ancestral", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.5})]:
            loop = {"ancestral": diffusion.p_sample_loop_progressive,
                    "ddim": diffusion.ddim_sample_loop_progressive}[name]
            noise = operator(torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(6)))
            final = list(loop(oracle, shape, noise=noise, clip_denoised=False,
                              generator=torch.Generator().manual_seed(7), **kwargs))[-1]["sample"]
            assert torch.allclose(final, a_x0.expand(shape), atol=1e-10), (operator.__name__, name, kwargs)
            decoded = diffusion.sample(oracle, shape, sampler=name, noise=noise, clip_denoised=False,
                                       generator=torch.Generator().manual_seed(7), **kwargs)
            assert torch.allclose(decoded, x0.expand(shape), atol=1e-9), (operator.__name__, name, kwargs)


def test_respacing_keeps_operator_decode_and_subclass():
    class MollifiedDiffusion(GaussianDiffusion):
        pass

    base = MollifiedDiffusion(num_timesteps=T, operator=scale, decode=unscale)
    base_table = base._table("alphas_cumprod", torch.device("cpu"))
    for spaced in (base.respaced("ddim5"), base.respaced(4).respaced(2)):
        assert type(spaced) is MollifiedDiffusion
        assert spaced.operator is scale and spaced.decode is unscale
        np.testing.assert_array_equal(spaced.alphas_cumprod,
                                      closed_form(base.betas)["alpha_bar"][spaced.timestep_map])
        assert spaced._table("alphas_cumprod", torch.device("cpu")).shape == (spaced.num_timesteps,)
    # the copy has its own tables: the original's are untouched
    assert base.num_timesteps == T and base._table("alphas_cumprod", torch.device("cpu")) is base_table


def test_what_an_operator_cannot_do_is_refused():
    for settings in (dict(loss_type="kl"), dict(variance_type="learned_range", loss_type="hybrid"),
                     dict(variance_type="learned")):
        with pytest.raises(ValueError, match="use loss_type 'mse' with variance_type 'fixed_small' or"):
            GaussianDiffusion(num_timesteps=T, operator=scale, **settings)
    diffusion = GaussianDiffusion(num_timesteps=T, operator=scale)
    x0, t = torch.zeros(2, 2, 2, 3), torch.tensor([0, 1])
    for call in (lambda: diffusion.calc_bpd_loop(lambda x, t: x, x0),
                 lambda: diffusion.vb_terms_bpd(lambda x, t: x, x0, x0, t),
                 lambda: diffusion.prior_bpd(x0)):
        with pytest.raises(ValueError, match="undefined here with an operator"):
            call()
    with pytest.raises(ValueError, match="operator must be a callable"):
        GaussianDiffusion(num_timesteps=T, operator="blur")
    shrinking = GaussianDiffusion(num_timesteps=T, operator=lambda x: x[:, :1])
    with pytest.raises(ValueError, match=r"shape-preserving.*\(2, 2, 2, 3\) to \(2, 1, 2, 3\)"):
        shrinking.q_sample(x0, t)
