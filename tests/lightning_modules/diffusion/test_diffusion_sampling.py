"""Samplers: DDIM against ancestral, Gaussian data with the optimal denoiser, seeded golden values."""
import numpy as np
import pytest
import torch
from torch import nn

from diffusion_references import closed_form, exact_denoiser
from lightning_modules.diffusion import GaussianDiffusion

F64 = torch.float64


class TinyDenoiser(nn.Module):
    """A two-layer conv net with an additive time input; weights drawn from a seeded generator."""

    def __init__(self, num_timesteps: int, channels: int = 1, hidden: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_timesteps = num_timesteps
        self.weight_in = nn.Parameter(torch.randn(hidden, channels, 3, 3, generator=g) * 0.3)
        self.bias_in = nn.Parameter(torch.randn(hidden, generator=g) * 0.1)
        self.time_in = nn.Parameter(torch.randn(hidden, generator=g))
        self.weight_out = nn.Parameter(torch.randn(channels, hidden, 3, 3, generator=g) * 0.1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = (t.to(x.dtype) / self.num_timesteps)[:, None, None, None] * self.time_in[None, :, None, None]
        hidden = nn.functional.conv2d(x, self.weight_in, self.bias_in, padding=1) + time
        return nn.functional.conv2d(nn.functional.silu(hidden), self.weight_out, padding=1)


def smooth_denoiser(x, t):
    return 0.5 * torch.tanh(x) + 0.01 * t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("step", [0, 1, 9, 19])
def test_ddim_eta_one_is_the_ancestral_step_with_fixed_small_variance(step):
    diffusion = GaussianDiffusion(num_timesteps=20, variance_type="fixed_small")
    x = torch.randn(3, 2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), step, dtype=torch.long)
    for seed in (1, 2):  # two noise draws: equal samples for both means equal means and equal noise scales
        ancestral = diffusion.p_sample(smooth_denoiser, x, t, generator=torch.Generator().manual_seed(seed))
        ddim = diffusion.ddim_sample(smooth_denoiser, x, t, eta=1.0, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(ddim["sample"], ancestral["sample"], atol=1e-10)
        assert torch.equal(ddim["pred_x0"], ancestral["pred_x0"])


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v", "mu"])
@pytest.mark.parametrize("steps", [None, "ddim4"])
def test_one_ddim_step_is_song_et_al_eq_12(prediction_type, steps):
    """With the network's x0 estimate x0_hat at x_t, DDIM's eta = 0 step is
    x_prev = sqrt(a_bar_prev) x0_hat + sqrt(1 - a_bar_prev) (x_t - sqrt(a_bar_t) x0_hat) / sqrt(1 - a_bar_t),
    a_bar_prev being the previous kept step's (1 at the first step); no noise is drawn."""
    base = GaussianDiffusion(num_timesteps=20, prediction_type=prediction_type)
    diffusion = base if steps is None else base.respaced(steps)
    kept = np.arange(20) if steps is None else np.arange(0, 20, 5)
    alpha_bar = closed_form(base.betas)["alpha_bar"]
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(len(kept), 2, 3, 3, dtype=F64, generator=g)
    x0_hat = torch.rand(1, 2, 3, 3, dtype=F64, generator=g) * 2 - 1
    denoiser = exact_denoiser(prediction_type, x0_hat, base.betas)  # predicts x0_hat from any x_t
    t = torch.arange(len(kept))
    state = g.get_state()
    out = diffusion.ddim_sample(denoiser, x_t, t, clip_denoised=False, eta=0.0, generator=g)
    assert torch.equal(g.get_state(), state)
    for i, step in enumerate(kept):
        a, a_prev = alpha_bar[step], (alpha_bar[kept[i - 1]] if i > 0 else 1.0)
        eps_hat = (x_t[i] - np.sqrt(a) * x0_hat[0]) / np.sqrt(1 - a)
        expected = np.sqrt(a_prev) * x0_hat[0] + np.sqrt(1 - a_prev) * eps_hat
        assert torch.allclose(out["sample"][i], expected, atol=1e-10), (i, step)
    assert torch.allclose(out["pred_x0"], x0_hat.expand_as(x_t), atol=1e-10)


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v", "mu"])
@pytest.mark.parametrize("steps", [None, "ddim4"])
def test_deterministic_ddim_keeps_the_noise_that_made_x_t(prediction_type, steps):
    """Song et al. Eq. 12 with the exact x0 prediction: from x_t = sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) eps, an
    eta = 0 step lands on sqrt(a_bar_prev) x0 + sqrt(1 - a_bar_prev) eps, the same eps, which the network is never
    given (it sees x_t and t only); the whole chain from x_T therefore ends at x0 itself."""
    base = GaussianDiffusion(num_timesteps=20, prediction_type=prediction_type)
    diffusion = base if steps is None else base.respaced(steps)
    kept = np.arange(20) if steps is None else np.arange(0, 20, 5)
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 20))  # Ho et al.'s linear schedule, by hand
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(1, 2, 3, 3, dtype=F64, generator=g) * 2 - 1
    eps = torch.randn(len(kept), 2, 3, 3, dtype=F64, generator=g)
    a = torch.from_numpy(alpha_bar[kept])[:, None, None, None]
    a_prev = torch.from_numpy(np.concatenate([[1.0], alpha_bar[kept[:-1]]]))[:, None, None, None]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    denoiser = exact_denoiser(prediction_type, x0, base.betas)  # eps is derived from x_t, not passed
    out = diffusion.ddim_sample(denoiser, x_t, torch.arange(len(kept)), clip_denoised=False, eta=0.0)
    torch.testing.assert_close(out["sample"], a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, rtol=0, atol=1e-10)
    chain = diffusion.ddim_sample_loop(denoiser, None, noise=x_t[-1:], clip_denoised=False)
    torch.testing.assert_close(chain, x0, rtol=0, atol=1e-9)


def test_gaussian_data_with_the_optimal_denoiser_is_sampled_exactly():
    """For x0 ~ N(0, I), x_t ~ N(0, I) at every t and E[eps | x_t] = sqrt(1 - a_bar_t) x_t; with sigma_t^2 = beta_t
    (optimal for this data) each ancestral step maps N(0, I) to N(0, I), and the final noiseless step gives
    variance a_bar_0 = 1 - beta_0."""
    diffusion = GaussianDiffusion(num_timesteps=100, variance_type="fixed_large")
    alpha_bar = torch.from_numpy(np.cumprod(1.0 - diffusion.betas))

    def optimal_eps(x_t, t):
        return (1.0 - alpha_bar[t]).sqrt().to(x_t.dtype)[:, None] * x_t

    samples = diffusion.sample(
        optimal_eps, (2000, 8), clip_denoised=False, generator=torch.Generator().manual_seed(0)
    )
    num_values = samples.numel()
    assert abs(samples.mean().item()) < 5 / np.sqrt(num_values)
    assert abs(samples.var().item() - (1 - 1e-4)) < 5 * np.sqrt(2 / num_values)


def test_progressive_loops_yield_every_step_and_generators_make_them_reproducible():
    diffusion = GaussianDiffusion(num_timesteps=12)
    net = TinyDenoiser(12)
    steps = list(diffusion.p_sample_loop_progressive(net, (2, 1, 4, 4), generator=torch.Generator().manual_seed(3)))
    assert [step["t"] for step in steps] == list(range(11, -1, -1))
    assert all(step["sample"].shape == step["pred_x0"].shape == (2, 1, 4, 4) for step in steps)
    torch.randn(10)  # global RNG draws do not affect seeded sampling
    again = diffusion.sample(net, (2, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, steps[-1]["sample"])
    # resuming the chain from an intermediate x_t (trajectory splitting) reproduces the rest of it
    ddim = list(diffusion.ddim_sample_loop_progressive(net, (2, 1, 4, 4), generator=torch.Generator().manual_seed(4)))
    resumed = diffusion.ddim_sample_loop(net, None, noise=ddim[5]["sample"], start_step=5)
    assert torch.allclose(resumed, ddim[-1]["sample"])
    with_bar = diffusion.ddim_sample_loop(net, None, noise=ddim[5]["sample"], start_step=5, progress=True)
    assert torch.equal(with_bar, resumed)


def test_sampler_arguments_raise_clear_errors():
    diffusion = GaussianDiffusion(num_timesteps=10)
    with pytest.raises(ValueError, match="ancestral, ddim"):
        diffusion.sample(smooth_denoiser, (1, 2), sampler="euler")
    with pytest.raises(ValueError, match="DDIM option"):
        diffusion.sample(smooth_denoiser, (1, 2), eta=1.0)
    with pytest.raises(ValueError, match="noise"):
        diffusion.p_sample_loop(smooth_denoiser, (1, 2), start_step=3)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        diffusion.ddim_sample(smooth_denoiser, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), eta=-1.0)


# golden values of seeded loops (T=20, TinyDenoiser seed 0, shape (2, 1, 4, 4), generator seed 0), computed once
GOLDEN_ANCESTRAL = {"sum": 0.4490854740142822,
                    "entries": [-0.9993805885314941, 0.8100600242614746, -0.9646218419075012]}
GOLDEN_DDIM = {"sum": 0.31926941871643066, "entries": [-1.0, -0.050340328365564346, -0.9880059361457825]}
GOLDEN_TOTAL_BPD = [13.477893829345703, 20.24919891357422]


def _golden_summary(samples: torch.Tensor) -> dict:
    return {"sum": samples.sum().item(), "entries": [samples[0, 0, 0, 0].item(), samples[0, 0, 1, 2].item(),
                                                     samples[1, 0, 3, 3].item()]}


@pytest.mark.parametrize("sampler, golden", [("ancestral", GOLDEN_ANCESTRAL), ("ddim", GOLDEN_DDIM)])
def test_golden_sampling_values(sampler, golden):
    diffusion = GaussianDiffusion(num_timesteps=20)
    samples = diffusion.sample(TinyDenoiser(20), (2, 1, 4, 4), sampler=sampler,
                               generator=torch.Generator().manual_seed(0))
    summary = _golden_summary(samples)
    assert summary["sum"] == pytest.approx(golden["sum"], abs=1e-5)
    assert summary["entries"] == pytest.approx(golden["entries"], abs=1e-5)


def test_golden_bits_per_dim():
    diffusion = GaussianDiffusion(num_timesteps=20)
    x0 = torch.randint(0, 256, (2, 1, 4, 4), generator=torch.Generator().manual_seed(1)).float() / 127.5 - 1.0
    terms = diffusion.calc_bpd_loop(TinyDenoiser(20), x0, generator=torch.Generator().manual_seed(0))
    assert terms["vb"].shape == terms["xstart_mse"].shape == terms["mse"].shape == (2, 20)
    assert torch.allclose(terms["total_bpd"], terms["vb"].sum(1) + terms["prior_bpd"])
    assert terms["total_bpd"].tolist() == pytest.approx(GOLDEN_TOTAL_BPD, abs=1e-5)
