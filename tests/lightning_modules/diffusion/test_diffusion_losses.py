"""KL and decoder likelihoods: closed forms and normalisation."""
import math

import pytest
import torch

from lightning_modules.diffusion.losses import (
    approx_standard_normal_cdf,
    continuous_gaussian_log_likelihood,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)


def test_normal_kl_is_zero_for_equal_gaussians_and_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    mean1, mean2, logvar1, logvar2 = torch.randn(4, 100, dtype=torch.float64, generator=g)
    assert torch.allclose(normal_kl(mean1, logvar1, mean1, logvar1), torch.zeros(100, dtype=torch.float64))
    var1, var2 = logvar1.exp(), logvar2.exp()
    expected = 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)
    assert torch.allclose(normal_kl(mean1, logvar1, mean2, logvar2), expected, atol=1e-12)
    standard = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean1, var1.sqrt()), torch.distributions.Normal(0.0, 1.0)
    )
    assert torch.allclose(normal_kl(mean1, logvar1, 0.0, 0.0), standard, atol=1e-12)


@pytest.mark.parametrize("num_levels", [256, 17])
def test_discretized_gaussian_probabilities_sum_to_one(num_levels):
    g = torch.Generator().manual_seed(1)
    num_pixels = 6
    levels = torch.linspace(-1.0, 1.0, num_levels, dtype=torch.float64)
    x = levels[:, None].expand(num_levels, num_pixels)  # every level of every pixel
    means = (torch.rand(num_pixels, dtype=torch.float64, generator=g) * 2.4 - 1.2).expand_as(x)
    log_scales = (torch.rand(num_pixels, dtype=torch.float64, generator=g) * 4 - 5).expand_as(x)
    log_probs = discretized_gaussian_log_likelihood(x, means, log_scales, num_levels=num_levels)
    assert torch.allclose(log_probs.exp().sum(dim=0), torch.ones(num_pixels, dtype=torch.float64), atol=1e-9)


def test_discretized_gaussian_narrow_decoder_puts_mass_on_the_nearest_level():
    x = torch.tensor([-1.0, 0.0, 1.0])
    log_probs = discretized_gaussian_log_likelihood(x, x.clone(), torch.full((3,), -8.0), num_levels=256)
    assert torch.all(log_probs > -1e-4)


def test_approx_cdf_and_continuous_likelihood():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert (approx_standard_normal_cdf(x) - torch.special.ndtr(x)).abs().max() < 2e-4
    means, log_scales = torch.full_like(x, 0.3), torch.full_like(x, -0.7)
    expected = torch.distributions.Normal(means, log_scales.exp()).log_prob(x)
    assert torch.allclose(continuous_gaussian_log_likelihood(x, means, log_scales), expected, atol=1e-12)
    assert math.isclose(float(mean_flat(torch.arange(6.0).reshape(2, 3))[1]), 4.0)


def test_bad_decoder_arguments_raise():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="num_levels"):
        discretized_gaussian_log_likelihood(x, x, x, num_levels=1)
    with pytest.raises(ValueError, match="one shape"):
        discretized_gaussian_log_likelihood(x, torch.zeros(4), x)
