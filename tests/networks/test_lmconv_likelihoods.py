"""Output distributions: every level's probability sums to 1 under extreme parameters, float32 is exact in the
tails, RGB coupling is a distribution over all colour cells, samples follow log_prob and stay on the grid."""
import itertools

import pytest
import torch

from networks.lmconv.likelihoods import BinarySoftmax, DiscretizedLogisticMixture, check_on_grid, from_levels


def extreme_params(likelihood, height, width, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    params = torch.randn(1, likelihood.num_params, height, width, generator=generator, dtype=torch.float64)
    scale = torch.tensor([0.1, 1, 30, 300], dtype=torch.float64)[torch.randint(0, 4, params.shape, generator=generator)]
    return (params * scale).to(dtype)


@pytest.mark.parametrize("num_levels", [2, 17, 32, 256])
def test_grey_mixture_sums_to_one_over_all_levels(num_levels):
    likelihood = DiscretizedLogisticMixture(1, num_levels, num_mixtures=5)
    pixels = 40
    params = extreme_params(likelihood, 1, pixels).expand(num_levels, -1, -1, -1)
    levels = from_levels(torch.arange(num_levels), num_levels)[:, None, None, None].expand(-1, 1, 1, pixels)
    log_p = likelihood.log_prob(params, levels)  # (L, 1, pixels)
    assert torch.isfinite(log_p).all()
    total = torch.logsumexp(log_p.double(), 0)
    assert total.abs().max() < 1e-5, total.abs().max()


def test_rgb_coupling_is_a_distribution_over_all_colour_cells():
    num_levels = 8
    likelihood = DiscretizedLogisticMixture(3, num_levels, num_mixtures=3)
    params = extreme_params(likelihood, 1, 6, seed=1).double()
    cells = torch.tensor(list(itertools.product(range(num_levels), repeat=3)))  # (512, 3)
    x = from_levels(cells, num_levels).double()[:, :, None, None].expand(-1, -1, 1, 6)
    log_p = likelihood.log_prob(params.expand(len(cells), -1, -1, -1), x)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros(1, 6, dtype=torch.float64), atol=1e-8, rtol=0)


@pytest.mark.parametrize("num_levels", [17, 256])
def test_float32_matches_float64_in_the_tails(num_levels):
    likelihood = DiscretizedLogisticMixture(1, num_levels, num_mixtures=1)
    # a sharp logistic far from the bin: the naive sigmoid difference is 0 - 0 here
    params = torch.tensor([0.0, 0.9, -6.5])[None, :, None, None].expand(3, -1, 1, 1)
    x = torch.tensor([-0.5, 0.0, 0.3])[:, None, None, None]
    x = from_levels(torch.round((x + 1) * (num_levels - 1) / 2).long(), num_levels)
    exact = likelihood.log_prob(params.double(), x.double())
    approx = likelihood.log_prob(params.float(), x.float())
    assert (exact < -50).all()
    torch.testing.assert_close(approx.double(), exact, rtol=1e-5, atol=1e-3)
    grad_params = params.clone().requires_grad_()
    likelihood.log_prob(grad_params, x).sum().backward()
    assert torch.isfinite(grad_params.grad).all()


def test_binary_softmax_sums_to_one():
    likelihood = BinarySoftmax(1)
    params = torch.randn(1, 2, 3, 3) * 50
    p = torch.stack([likelihood.log_prob(params, torch.full((1, 1, 3, 3), v)) for v in (-1.0, 1.0)]).exp().sum(0)
    torch.testing.assert_close(p, torch.ones_like(p))
    with pytest.raises(ValueError, match="2 levels"):
        BinarySoftmax(1, num_levels=17)


@pytest.mark.parametrize("likelihood", [DiscretizedLogisticMixture(1, 5, 2), BinarySoftmax(1),
                                        DiscretizedLogisticMixture(3, 3, 2)], ids=["grey", "binary", "rgb"])
def test_samples_are_on_the_grid_and_follow_log_prob(likelihood):
    params = extreme_params(likelihood, 1, 1, seed=2) / 30
    draws = 40000
    samples = likelihood.sample(params.expand(draws, -1, -1, -1), torch.Generator().manual_seed(0))
    check_on_grid(samples, likelihood.num_levels)
    values, counts = torch.unique(samples.flatten(1), dim=0, return_counts=True)
    expected = likelihood.log_prob(params.expand(len(values), -1, -1, -1),
                                   values[:, :, None, None]).exp().flatten()
    assert expected.sum() > 0.99
    assert (counts / draws - expected).abs().max() < 0.01


def test_mixture_temperature_sharpens_the_component_choice():
    likelihood = DiscretizedLogisticMixture(1, 17, 2)
    params = torch.tensor([1.0, 0.0, -0.8, 0.8, -5.0, -5.0])[None, :, None, None].expand(4000, -1, 1, 1)
    cold = likelihood.sample(params, torch.Generator().manual_seed(0), mixture_temperature=0.05)
    warm = likelihood.sample(params, torch.Generator().manual_seed(0))
    assert (cold < 0).float().mean() > 0.99 and 0.6 < (warm < 0).float().mean() < 0.85


def test_bad_head_sizes_and_off_grid_data_are_refused():
    with pytest.raises(ValueError, match="needs 30 parameters per pixel, the network gives 29"):
        DiscretizedLogisticMixture(1, 17, 10).log_prob(torch.zeros(1, 29, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="needs 100 parameters"):
        DiscretizedLogisticMixture(3, 256, 10).log_prob(torch.zeros(1, 30, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="grey \\(1\\) or RGB \\(3\\)"):
        DiscretizedLogisticMixture(2, 17)
    with pytest.raises(ValueError, match="not on the 17-level grid"):
        check_on_grid(torch.tensor([0.0, 0.03]), 17)
    with pytest.raises(ValueError, match="not on the 17-level grid"):
        check_on_grid(torch.tensor([1.125]), 17)
    check_on_grid(from_levels(torch.arange(17), 17), 17)
