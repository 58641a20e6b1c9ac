"""∞-Diff's mollifier T (DCT-domain Gaussian blur) and its Wiener inverse against scipy and closed forms, and the
mollified process of App. B with the real operator, in float64."""
import math
import pickle

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

from diffusion_references import closed_form
from lightning_modules.diffusion import GaussianDiffusion
from lightning_modules.diffusion.mollifier import GaussianBlur, WienerDeblur, dct2, idct2

F64 = torch.float64


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (1, 4), (6, 3)])
def test_the_fft_dct_is_scipys_orthonormal_dct_and_inverts(shape):
    x = torch.randn(2, 3, *shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    reference = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(dct2(x).numpy(), reference, atol=1e-12)
    assert torch.allclose(idct2(dct2(x)), x, atol=1e-12)


@pytest.mark.parametrize("shape,std", [((8, 8), 1.0), ((5, 9), 0.6), ((16, 12), 2.5)])
def test_the_blur_is_the_scipy_dctn_gaussian(shape, std):
    x = torch.randn(2, *shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    rows, cols = np.arange(shape[0]) * np.pi / shape[0], np.arange(shape[1]) * np.pi / shape[1]
    gain = np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) * std**2 / 2)
    reference = scipy.fft.idctn(scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho") * gain, axes=(-2, -1),
                                norm="ortho")
    np.testing.assert_allclose(GaussianBlur(shape, std)(x).numpy(), reference, atol=1e-12)


def test_std_zero_is_the_identity_and_the_dc_term_is_kept():
    x = torch.randn(3, 1, 6, 10, dtype=F64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(GaussianBlur((6, 10), 0.0)(x), x, atol=1e-13)
    assert torch.allclose(GaussianBlur((6, 10), 1.7)(x).mean((-2, -1)), x.mean((-2, -1)), atol=1e-13)


def test_the_blur_is_a_semigroup_symmetric_and_commutes_with_flips():
    x = torch.randn(2, 12, 9, dtype=F64, generator=torch.Generator().manual_seed(3))
    a, b = GaussianBlur((12, 9), 0.8), GaussianBlur((12, 9), 1.5)
    assert torch.allclose(a(b(x)), GaussianBlur((12, 9), math.hypot(0.8, 1.5))(x), atol=1e-13)
    matrix = operator_matrix(b, (12, 9))
    assert torch.allclose(matrix, matrix.T, atol=1e-13)
    assert torch.allclose(b(x.flip(-1)), b(x).flip(-1), atol=1e-13)
    assert torch.allclose(b(x.flip(-2)), b(x).flip(-2), atol=1e-13)


def test_the_blur_is_a_reflect_padded_gaussian_filter_once_resolved():
    """At std >= 2 px the band-limited DCT Gaussian equals scipy's half-sample-reflect Gaussian filter (whose
    pixel centres sit where the DCT's do), edges included."""
    x = torch.randn(40, 36, dtype=F64, generator=torch.Generator().manual_seed(4))
    reference = scipy.ndimage.gaussian_filter(x.numpy(), sigma=2.0, mode="reflect", truncate=12.0)
    np.testing.assert_allclose(GaussianBlur((40, 36), 2.0)(x).numpy(), reference, atol=1e-8)


@pytest.mark.parametrize("size,std,noise_std", [(256, 1.0, 1.0), (512, 2.0, 2.0)])
def test_mollified_white_noise_has_per_pixel_std_one_over_two_sqrt_pi_sigma(size, std, noise_std):
    """std(T xi) = 1 / (2 sqrt(pi) sigma) (0.282 at sigma = 1 px); at r = 2 the same field is sigma 2 px with white
    noise of std r = 2 per pixel, so the per-pixel std stays the same."""
    noise = noise_std * torch.randn(size, size, generator=torch.Generator().manual_seed(5))
    assert abs(GaussianBlur((size, size), std)(noise).std().item() - 1 / (2 * math.sqrt(math.pi))) < 0.01


def test_the_wiener_filter_inverts_exactly_at_zero_inv_snr_and_regularises_otherwise():
    x = torch.randn(2, 1, 10, 8, dtype=F64, generator=torch.Generator().manual_seed(6))
    blur = GaussianBlur((10, 8), 1.0)
    assert torch.allclose(WienerDeblur((10, 8), 1.0, inv_snr=0.0)(blur(x)), x, atol=1e-9)
    wiener = WienerDeblur((10, 8), 1.0, inv_snr=0.05)
    gain = wiener.gain(F64, torch.device("cpu"))
    assert gain.max() <= 1 / (2 * 0.05) + 1e-12  # G / (G^2 + s^2) peaks at 1 / (2 s)
    blurred_gain = blur.gain(F64, torch.device("cpu"))
    assert torch.allclose(gain, blurred_gain / (blurred_gain**2 + 0.05**2))


def test_half_precision_is_computed_in_float32_outside_autocast():
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    blur = GaussianBlur((16, 16), 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = blur(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), blur(x.bfloat16().float()), atol=1e-2)


def test_filters_pickle_without_their_device_cache():
    blur = GaussianBlur((6, 6), 1.0)
    x = torch.randn(1, 6, 6)
    expected = blur(x)
    restored = pickle.loads(pickle.dumps(blur))
    assert restored._gains == {} and torch.allclose(restored(x), expected)


def test_bad_settings_are_refused_with_the_value():
    with pytest.raises(ValueError, match=r"std=-1.0 must be a finite number >= 0"):
        GaussianBlur((8, 8), -1.0)
    with pytest.raises(ValueError, match=r"inv_snr=-0.1 must be a finite number >= 0"):
        WienerDeblur((8, 8), 1.0, inv_snr=-0.1)
    with pytest.raises(ValueError, match="built for 8x8 images.*one per sampling resolution"):
        GaussianBlur((8, 8), 1.0)(torch.zeros(1, 16, 16))


# ---- App. B with the real operator ---------------------------------------------------------------------------------

SHAPE = (4, 5)
STEPS = 20


def operator_matrix(operator, shape=SHAPE) -> torch.Tensor:
    """The (HW, HW) matrix of a linear operator on H x W images (row-major pixels)."""
    basis = torch.eye(math.prod(shape), dtype=F64).reshape(-1, *shape)
    return operator(basis).reshape(math.prod(shape), -1).T


@pytest.fixture(scope="module")
def mollified():
    blur = GaussianBlur(SHAPE, 0.7)
    return GaussianDiffusion(schedule="cosine", num_timesteps=STEPS, operator=blur), operator_matrix(blur)


@pytest.mark.parametrize("step", [1, 7, STEPS - 1])
def test_the_posterior_is_the_schur_complement_of_the_mollified_chain(mollified, step):
    """x_{t-1} = sqrt(a_bar_{t-1}) T x0 + sqrt(1 - a_bar_{t-1}) T xi, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) T xi'
    conditioned on x_t by Gaussian elimination with full matrices equals Eq. 12: N(mu~_t, beta~_t T T^T)."""
    diffusion, matrix = mollified
    ref = closed_form(diffusion.betas)
    alpha_bar, alpha_bar_prev = ref["alpha_bar"][step], ref["alpha_bar"][step - 1]
    alpha = 1 - diffusion.betas[step]
    g = torch.Generator().manual_seed(8)
    x0, x_t = torch.rand(1, 1, *SHAPE, dtype=F64, generator=g) * 2 - 1, torch.randn(1, 1, *SHAPE, dtype=F64,
                                                                                      generator=g)
    gram = matrix @ matrix.T
    cov_prev, cov_t = (1 - alpha_bar_prev) * gram, (1 - alpha_bar) * gram
    cross = math.sqrt(alpha) * cov_prev
    t_x0 = matrix @ x0.flatten()
    mean = math.sqrt(alpha_bar_prev) * t_x0 + cross @ torch.linalg.solve(cov_t, x_t.flatten()
                                                                       - math.sqrt(alpha_bar) * t_x0)
    covariance = cov_prev - cross @ torch.linalg.solve(cov_t, cross.T)
    got_mean, got_variance, _ = diffusion.q_posterior_mean_variance(x0, x_t, torch.tensor([step]))
    assert torch.allclose(got_mean.flatten(), mean, atol=1e-9)
    assert torch.allclose(got_variance.flatten()[0] * gram, covariance, atol=1e-10)


@pytest.mark.parametrize("step", [1, 10, STEPS - 1])
def test_marginalising_the_posterior_over_x_t_gives_q_of_x_t_minus_1(mollified, step):
    """App. B Eqs. 29 and 32: A mu + b = sqrt(a_bar_{t-1}) T x0 and L^-1 + A Lambda^-1 A^T = (1 - a_bar_{t-1}) T T^T,
    with q(x_t|x0) = N(mu, Lambda^-1) and q(x_{t-1}|x_t,x0) = N(A x_t + b, L^-1)."""
    diffusion, matrix = mollified
    alpha_bar, alpha_bar_prev = diffusion.alphas_cumprod[step], diffusion.alphas_cumprod_prev[step]
    x0 = torch.rand(1, 1, *SHAPE, dtype=F64, generator=torch.Generator().manual_seed(9)) * 2 - 1
    t = torch.tensor([step])
    mu, lambda_inverse, _ = diffusion.q_mean_variance(x0, t)
    b, posterior_variance, _ = diffusion.q_posterior_mean_variance(x0, torch.zeros_like(x0), t)
    coef_xt = diffusion.posterior_mean_coef2[step]  # the posterior mean is linear in x_t with this factor
    t_x0 = matrix @ x0.flatten()
    assert torch.allclose(mu.flatten(), math.sqrt(alpha_bar) * t_x0, atol=1e-12)
    assert torch.allclose(coef_xt * mu + b, math.sqrt(alpha_bar_prev) * (matrix @ x0.flatten()).reshape(x0.shape),
                          atol=1e-12)
    gram = matrix @ matrix.T
    marginal = posterior_variance.flatten()[0] * gram + coef_xt**2 * lambda_inverse.flatten()[0] * gram
    assert torch.allclose(marginal, (1 - alpha_bar_prev) * gram, atol=1e-12)


def test_q_sample_covariance_is_one_minus_alpha_bar_times_T_T_transpose(mollified):
    diffusion, matrix = mollified
    step, draws = 9, 40000
    x_t = diffusion.q_sample(torch.zeros(draws, 1, *SHAPE, dtype=F64), torch.full((draws,), step),
                             noise=torch.randn(draws, 1, *SHAPE, dtype=F64, generator=torch.Generator().manual_seed(10)))
    samples = x_t.reshape(draws, -1)
    expected = (1 - diffusion.alphas_cumprod[step]) * matrix @ matrix.T
    centred = samples - samples.mean(0)
    error = ((expected.diag()[:, None] * expected.diag()[None, :] + expected**2) / draws).sqrt()
    assert ((centred.T @ centred / (draws - 1) - expected).abs() <= 5 * error).all()


def test_noise_scale_scales_every_white_noise_draw():
    diffusion = GaussianDiffusion(num_timesteps=STEPS, noise_scale=2.0)
    x0 = torch.zeros(20000, 1, 2, 2, dtype=F64)
    t = torch.full((20000,), STEPS - 1)
    assert abs(diffusion.q_sample(x0, t).std().item() / math.sqrt(1 - diffusion.alphas_cumprod[-1]) - 2) < 0.05
    first = []
    diffusion.respaced(2).sample(lambda x, t: first.append(x) or torch.zeros_like(x), (20000, 1, 2, 2),
                                 generator=torch.Generator().manual_seed(11))
    assert abs(first[0].std().item() - 2) < 0.05
    with pytest.raises(ValueError, match="noise_scale"):
        GaussianDiffusion(num_timesteps=STEPS, noise_scale=0.0)
