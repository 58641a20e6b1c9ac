"""Beta schedules: exact endpoints, float64, monotone, cosine against its closed form."""
import math

import numpy as np
import pytest

from lightning_modules.diffusion import GaussianDiffusion, get_named_beta_schedule


@pytest.mark.parametrize("num_timesteps", [10, 1000])
def test_linear_schedule_is_ho_et_al_exactly(num_timesteps):
    betas = get_named_beta_schedule("linear", num_timesteps)
    assert betas.dtype == np.float64 and betas.shape == (num_timesteps,)
    assert betas[0] == 1e-4 and betas[-1] == 0.02  # exact: no 1000 / T rescaling
    assert np.all(np.diff(betas) > 0)


def test_cosine_alpha_bar_matches_closed_form():
    num_timesteps, s = 1000, 0.008
    betas = get_named_beta_schedule("cosine", num_timesteps)
    assert betas.dtype == np.float64 and betas.shape == (num_timesteps,)
    f = lambda u: math.cos((u / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([f(t + 1) / f(0) for t in range(num_timesteps)])
    alphas_cumprod = np.cumprod(1.0 - betas)
    # the last beta is clipped at max_beta=0.999 (alpha_bar(1) = 0), every earlier step is exact
    np.testing.assert_allclose(alphas_cumprod[:-1], expected[:-1], rtol=1e-10)
    assert betas[-1] == 0.999 and np.all(betas <= 0.999)
    assert np.all(np.diff(alphas_cumprod) < 0)


@pytest.mark.parametrize("shift", [-4.0, 2.0])
def test_shifted_cosine_moves_every_log_snr_by_the_shift(shift):
    # Hoogeboom et al. 2023: log SNR_shifted(t) = log SNR_cosine(t) + shift, at every step before the clipped last one
    log_snr = lambda betas: np.log(np.cumprod(1.0 - betas)) - np.log1p(-np.cumprod(1.0 - betas))  # noqa: E731
    plain = get_named_beta_schedule("cosine", 1000)
    shifted = get_named_beta_schedule("cosine", 1000, logsnr_shift=shift)
    np.testing.assert_allclose((log_snr(shifted) - log_snr(plain))[:-1], shift, atol=1e-6)
    np.testing.assert_array_equal(get_named_beta_schedule("cosine", 1000, logsnr_shift=0.0), plain)
    diffusion = GaussianDiffusion(schedule="cosine", num_timesteps=1000, logsnr_shift=shift)
    np.testing.assert_array_equal(diffusion.betas, shifted)
    with pytest.raises(ValueError, match="schedule=cosine, or logsnr_shift=0"):
        GaussianDiffusion(schedule="linear", logsnr_shift=shift)


def test_quadratic_and_constant_schedules():
    quadratic = get_named_beta_schedule("quadratic", 50, beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(np.sqrt(quadratic), np.linspace(1e-2, math.sqrt(0.02), 50), rtol=1e-12)
    assert np.all(np.diff(quadratic) > 0)
    constant = get_named_beta_schedule("constant", 7, beta_end=0.008)
    assert constant.dtype == np.float64 and np.all(constant == 0.008) and constant.shape == (7,)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "quadratic", "constant"])
def test_diffusion_respects_num_timesteps(schedule):
    diffusion = GaussianDiffusion(schedule=schedule, num_timesteps=37)
    assert diffusion.num_timesteps == 37 and diffusion.betas.shape == (37,)
    assert diffusion.alphas_cumprod.dtype == np.float64


def test_bad_schedule_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="linear, cosine, quadratic, constant"):
        get_named_beta_schedule("sigmoid", 10)
    with pytest.raises(ValueError, match="max_beta"):
        get_named_beta_schedule("cosine", 10, beta_end=0.02)
    with pytest.raises(ValueError, match="positive int"):
        get_named_beta_schedule("linear", 0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        GaussianDiffusion(betas=np.array([0.1, 1.0]))
