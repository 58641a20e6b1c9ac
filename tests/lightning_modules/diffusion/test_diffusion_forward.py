"""Forward process, posterior, parameterisations and p_mean_variance against closed forms (float64)."""
import numpy as np
import pytest
import torch

from diffusion_references import closed_form, column, exact_denoiser
from lightning_modules.diffusion import GaussianDiffusion

T = 50
F64 = torch.float64


def test_q_sample_moments():
    diffusion = GaussianDiffusion(num_timesteps=T)
    g = torch.Generator().manual_seed(0)
    num_draws, step = 40000, 30
    x0 = torch.tensor([-0.9, 0.1, 0.7], dtype=F64).expand(num_draws, 3)
    t = torch.full((num_draws,), step, dtype=torch.long)
    x_t = diffusion.q_sample(x0, t, noise=torch.randn(num_draws, 3, dtype=F64, generator=g))
    alpha_bar = closed_form(diffusion.betas)["alpha_bar"][step]
    tolerance = 5 * np.sqrt(1 - alpha_bar) / np.sqrt(num_draws)
    assert torch.allclose(x_t.mean(0), np.sqrt(alpha_bar) * x0[0], atol=tolerance)
    assert torch.allclose(x_t.var(0), torch.full((3,), 1 - alpha_bar, dtype=F64), rtol=5 * np.sqrt(2 / num_draws))
    mean, variance, log_variance = diffusion.q_mean_variance(x0[:2], t[:2])
    assert torch.allclose(mean, np.sqrt(alpha_bar) * x0[:2]) and torch.allclose(variance, log_variance.exp())


def test_posterior_matches_ho_eqs_3_6_and_3_7():
    diffusion = GaussianDiffusion(num_timesteps=T)
    reference = closed_form(diffusion.betas)
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0, 1, 7, T - 1])
    x0, x_t = torch.randn(2, 4, 3, 5, dtype=F64, generator=g)
    mean, variance, log_variance = diffusion.q_posterior_mean_variance(x0, x_t, t)
    expected_mean = column(reference["coef_x0"], t, 3) * x0 + column(reference["coef_xt"], t, 3) * x_t
    assert torch.allclose(mean, expected_mean, atol=1e-12)
    assert torch.allclose(variance, column(reference["posterior_variance"], t, 3).expand_as(x_t), atol=1e-15)
    # the log-variance is clipped at t = 0 (beta~_0 = 0) to beta~_1
    assert torch.allclose(log_variance[1:], variance[1:].log())
    assert torch.allclose(log_variance[0], torch.tensor(np.log(reference["posterior_variance"][1]), dtype=F64))
    assert mean.dtype == F64


@pytest.mark.parametrize("step", [1, 20, T - 1])
def test_posterior_is_consistent_with_the_forward_marginals(step):
    """x_t ~ q(x_t|x_0), then x_{t-1} ~ q(x_{t-1}|x_t,x_0) has the marginal q(x_{t-1}|x_0)."""
    diffusion = GaussianDiffusion(num_timesteps=T)
    alpha_bar_prev = closed_form(diffusion.betas)["alpha_bar_prev"][step]
    g = torch.Generator().manual_seed(2)
    num_draws = 40000
    x0 = torch.tensor([-0.5, 0.8], dtype=F64).expand(num_draws, 2)
    t = torch.full((num_draws,), step, dtype=torch.long)
    x_t = diffusion.q_sample(x0, t, noise=torch.randn(num_draws, 2, dtype=F64, generator=g))
    mean, variance, _ = diffusion.q_posterior_mean_variance(x0, x_t, t)
    x_prev = mean + variance.sqrt() * torch.randn(num_draws, 2, dtype=F64, generator=g)
    std = np.sqrt(1 - alpha_bar_prev)
    assert torch.allclose(x_prev.mean(0), np.sqrt(alpha_bar_prev) * x0[0], atol=5 * std / np.sqrt(num_draws))
    assert torch.allclose(x_prev.var(0), torch.full((2,), std**2, dtype=F64), rtol=5 * np.sqrt(2 / num_draws))


def test_eps_x0_v_conversions_round_trip():
    diffusion = GaussianDiffusion(schedule="cosine", num_timesteps=T)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 6, 10, 2, dtype=F64, generator=g)
    t = torch.tensor([0, 5, 10, 25, 40, T - 1])
    x_t = diffusion.q_sample(x0, t, noise=eps)
    assert torch.allclose(diffusion.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-9)
    assert torch.allclose(diffusion.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-9)
    v = diffusion.get_v(x0, eps, t)
    alpha_bar = column(closed_form(diffusion.betas)["alpha_bar"], t, 3)
    assert torch.allclose(v, alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0, atol=1e-12)
    assert torch.allclose(diffusion.predict_x0_from_v(x_t, t, v), x0, atol=1e-9)


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v", "mu"])
@pytest.mark.parametrize("steps", [None, "ddim10"])
def test_oracle_prediction_gives_the_posterior_mean(prediction_type, steps):
    """An exact network of the original process gives the posterior mean and variance of the process it samples
    with: a respaced one steps from kept step k_i to k_{i-1}, with betas 1 - a_bar[k_i] / a_bar[k_{i-1}]."""
    base = GaussianDiffusion(num_timesteps=T, prediction_type=prediction_type)
    diffusion = base if steps is None else base.respaced(steps)
    kept = np.arange(T) if steps is None else np.arange(0, T, 5)
    alpha_bar = closed_form(base.betas)["alpha_bar"][kept]
    reference = closed_form(1 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]]))
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(5, 3, 4, 4, dtype=F64, generator=g) * 2 - 1
    eps = torch.randn(5, 3, 4, 4, dtype=F64, generator=g)
    t = torch.tensor([0, 1, 3, 7, len(kept) - 1])
    x_t = column(reference["alpha_bar"], t, 4).sqrt() * x0 + column(1 - reference["alpha_bar"], t, 4).sqrt() * eps
    out = diffusion.p_mean_variance(exact_denoiser(prediction_type, x0, base.betas, eps), x_t, t)
    expected_mean = column(reference["coef_x0"], t, 4) * x0 + column(reference["coef_xt"], t, 4) * x_t
    assert torch.allclose(out["mean"], expected_mean, atol=1e-9)
    assert torch.allclose(out["pred_x0"], x0, atol=1e-9)
    assert torch.allclose(out["eps"][1:], eps[1:], atol=1e-7)
    assert torch.allclose(out["variance"][1:], column(reference["posterior_variance"], t, 4)[1:].expand_as(x_t[1:]))


def test_fixed_large_and_learned_variances():
    g = torch.Generator().manual_seed(5)
    x_t = torch.randn(3, 7, 2, dtype=F64, generator=g)  # a field: (B, N, C)
    t = torch.tensor([0, 3, T - 1])
    large = GaussianDiffusion(num_timesteps=T, variance_type="fixed_large")
    out = large.p_mean_variance(lambda x, t: torch.zeros_like(x), x_t, t)
    expected = torch.from_numpy(np.append(large.posterior_variance[1], large.betas[1:]))[t]
    assert torch.allclose(out["variance"][:, 0, 0], expected)

    learned_range = GaussianDiffusion(num_timesteps=T, variance_type="learned_range", channel_dim=-1)
    for fraction, table in [(1.0, large.betas), (-1.0, large.posterior_variance)]:
        output = torch.cat([torch.zeros_like(x_t), torch.full_like(x_t, fraction)], dim=-1)
        out = learned_range.p_mean_variance(lambda x, t: output, x_t, t)
        assert torch.allclose(out["variance"][1:, 0, 0], torch.from_numpy(table)[t[1:]])
        assert out["mean"].shape == x_t.shape

    learned = GaussianDiffusion(num_timesteps=T, variance_type="learned", channel_dim=-1)
    log_variance = torch.randn_like(x_t)
    out = learned.p_mean_variance(lambda x, t: torch.cat([torch.zeros_like(x), log_variance], -1), x_t, t)
    assert torch.equal(out["log_variance"], log_variance)


def test_tables_are_float64_cached_per_device_and_cast_to_the_input_dtype():
    diffusion = GaussianDiffusion(num_timesteps=T)
    table = diffusion._table("alphas_cumprod", torch.device("cpu"))
    assert table.dtype == F64 and diffusion._table("alphas_cumprod", torch.device("cpu")) is table
    t = torch.tensor([0, T - 1])
    for dtype in (torch.float32, F64, torch.bfloat16):
        x = torch.ones(2, 3, dtype=dtype)
        assert diffusion.q_sample(x, t, noise=torch.zeros_like(x)).dtype == dtype


def test_bad_arguments_raise_clear_errors():
    for option, message in [
        (dict(prediction_type="score"), "eps, x0, v, mu"),
        (dict(variance_type="fixed"), "fixed_small, fixed_large, learned, learned_range"),
        (dict(loss_type="l1"), "mse, kl, hybrid"),
        (dict(loss_type="hybrid"), "learned"),
        (dict(num_levels=1), "num_levels"),
    ]:
        with pytest.raises(ValueError, match=message):
            GaussianDiffusion(num_timesteps=T, **option)
    diffusion = GaussianDiffusion(num_timesteps=T, variance_type="learned_range")
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"expected \(2, 6, 4, 4\).*channel_dim=1"):
        diffusion.p_mean_variance(lambda x, t: x, x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"integer tensor of shape \(2,\)"):
        diffusion.q_sample(x, torch.tensor([0.5, 1.0]))
