"""Volume rendering, stratified and importance sampling, and NeRF's network against closed forms."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from networks.nerf import NeRFMLP, PositionalEncoding
from networks.volume_rendering import composite, render_rays, sample_pdf, stratified_depths


def slab(depths: torch.Tensor, sigma: float, a: float, b: float) -> torch.Tensor:
    """Raw density sigma on the depths in [a, b), 0 elsewhere: (R, S, 1)."""
    return torch.where((depths >= a) & (depths < b), sigma, 0.0)[..., None].double()


@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_a_slab_of_density_accumulates_one_minus_exp_of_minus_sigma_d(sigma):
    depths = torch.linspace(2.0, 6.0, 4001, dtype=torch.float64)[None]
    directions = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)
    colours = torch.zeros(1, 4001, 3, dtype=torch.float64)
    out = composite(colours, slab(depths, sigma, 3.0, 4.5), depths, directions, white_background=False)
    assert out["acc"].item() == pytest.approx(1 - math.exp(-sigma * 1.5), abs=2e-3)
    # a longer direction vector covers more distance per unit depth: the optical depth scales with |d|
    longer = composite(colours, slab(depths, sigma, 3.0, 4.5), depths, 2 * directions, white_background=False)
    assert longer["acc"].item() == pytest.approx(1 - math.exp(-2 * sigma * 1.5), abs=2e-3)
    transmittance = 1 - out["weights"].cumsum(-1)
    assert (transmittance[:, 1:] <= transmittance[:, :-1] + 1e-12).all()


def test_weights_sum_to_at_most_one_and_white_fills_the_rest():
    generator = torch.Generator().manual_seed(0)
    depths = stratified_depths(2.0, 6.0, 256, 32, perturb=True, device=torch.device("cpu"), generator=generator)
    assert ((depths >= 2) & (depths <= 6)).all() and (depths.diff(dim=-1) > 0).all()
    raw = torch.randn(256, 32, 1, generator=generator) * 3
    raw[:, -1] = -1.0  # no density at the last sample, so the last-interval rule does not close every ray
    rgb = torch.randn(256, 32, 3, generator=generator)
    out = composite(rgb, raw, depths, torch.randn(256, 3, generator=generator), white_background=True)
    total = out["weights"].sum(-1)
    assert (total <= 1 + 1e-6).all() and (total < 0.999).any()
    torch.testing.assert_close(out["acc"][:, 0], total)
    empty = composite(rgb, torch.full_like(raw, -5.0), depths, torch.ones(256, 3), white_background=True)
    torch.testing.assert_close(empty["rgb"], torch.ones(256, 3))  # zero density renders white


def test_the_last_interval_absorbs_any_density_and_an_opaque_wall_gives_its_depth():
    depths = torch.linspace(2.0, 6.0, 64)[None]
    raw = torch.zeros(1, 64, 1)
    raw[0, -1] = 1e-3  # a whisper of density at the last sample: the 1e10 interval makes it opaque
    assert composite(torch.zeros(1, 64, 3), raw, depths, torch.ones(1, 3), False)["acc"].item() == \
        pytest.approx(1.0, abs=1e-5)
    wall = torch.where(depths >= 3.5, 1e4, 0.0)[..., None]
    out = composite(torch.zeros(1, 64, 3), wall, depths, torch.tensor([[0.0, 0, -1]]), False)
    first = depths[depths >= 3.5][0]
    assert out["depth"].item() == pytest.approx(first.item(), abs=1e-4)


def test_importance_samples_follow_the_piecewise_constant_pdf():
    bins = torch.tensor([[0.0, 1.0, 1.5, 3.0, 4.0]], dtype=torch.float64).expand(4, -1).contiguous()
    weights = torch.tensor([[1.0, 4.0, 0.0, 3.0]], dtype=torch.float64).expand(4, -1).contiguous()
    samples = sample_pdf(bins, weights, 20000, deterministic=False, generator=torch.Generator().manual_seed(0))
    assert ((samples >= 0) & (samples <= 4)).all()
    probability = (weights[0] + 1e-5) / (weights[0] + 1e-5).sum()
    counts = np.histogram(samples.numpy().ravel(), bins=bins[0].numpy())[0]
    keep = probability.numpy() > 1e-3
    chi2 = stats.chisquare(counts[keep], probability.numpy()[keep] / probability.numpy()[keep].sum() * counts[keep].sum())
    assert chi2.pvalue > 1e-3, (counts, probability)
    # within a bin the density is uniform: the second bin's samples spread evenly over [1, 1.5)
    inside = samples[(samples >= 1) & (samples < 1.5)]
    assert stats.kstest(((inside - 1) / 0.5).numpy(), "uniform").pvalue > 1e-3
    # deterministic sampling is the inverse cdf at evenly spaced quantiles (cdf 0, 1/8, 5/8, 5/8, 1 here);
    # zero weights give every bin the same mass
    quantiles = sample_pdf(bins[:1], weights[:1], 3, deterministic=True)
    torch.testing.assert_close(quantiles, torch.tensor([[0.0, 1.375, 4.0]], dtype=torch.float64), atol=1e-3, rtol=0)
    uniform = sample_pdf(bins[:1], torch.zeros(1, 4, dtype=torch.float64), 5, deterministic=True)
    torch.testing.assert_close(uniform, torch.tensor([[0.0, 1.0, 1.5, 3.0, 4.0]], dtype=torch.float64), atol=1e-3,
                               rtol=0)


def test_positional_encoding_closed_form_has_no_pi():
    encoding = PositionalEncoding(3)
    x = torch.tensor([[0.3, -1.2, 2.0]])
    expected = [0.3, -1.2, 2.0]
    for k in range(3):
        expected += [math.sin(2 ** k * v) for v in (0.3, -1.2, 2.0)] + [math.cos(2 ** k * v) for v in (0.3, -1.2, 2.0)]
    assert encoding.output_dim == 3 + 6 * 3
    torch.testing.assert_close(encoding(x), torch.tensor([expected]))


def test_the_mlp_density_ignores_the_view_direction_and_the_skip_reads_the_input():
    torch.manual_seed(0)
    net = NeRFMLP(position_frequencies=4, direction_frequencies=2, depth=8, width=32, skips=(4,))
    points = torch.randn(10, 3)
    rgb_a, sigma_a = net(points, torch.nn.functional.normalize(torch.randn(10, 3), dim=-1))
    rgb_b, sigma_b = net(points, torch.nn.functional.normalize(torch.randn(10, 3), dim=-1))
    torch.testing.assert_close(sigma_a, sigma_b)
    assert not torch.allclose(rgb_a, rgb_b)
    assert net.trunk[5].in_features == 32 + net.position_encoding.output_dim  # the layer after the skip at 4
    assert sum(p.numel() for p in NeRFMLP().parameters()) == 595844  # the official 8x256 network


def test_the_fine_network_sees_the_coarse_depths_and_the_importance_samples():
    seen = {}

    def constant(points, directions):
        return torch.zeros(*points.shape[:-1], 3), torch.ones(*points.shape[:-1], 1)

    def fine(points, directions):
        seen["count"] = points.shape[1]
        return constant(points, directions)

    rays = torch.cat([torch.zeros(5, 3), torch.tensor([[0.0, 0.0, -1.0]]).expand(5, 3)], -1)
    out = render_rays(rays, constant, fine, 2.0, 6.0, 16, 8, perturb=False, white_background=True)
    assert seen["count"] == 24 and set(out) == {"coarse", "fine"} and out["fine"]["rgb"].shape == (5, 3)
