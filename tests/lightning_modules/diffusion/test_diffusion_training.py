"""training_losses: keys, shapes, oracle zeros, the hybrid stop-gradient, and the bound's units."""
import numpy as np
import pytest
import torch

from diffusion_references import exact_denoiser
from lightning_modules.diffusion import GaussianDiffusion

T = 40
F64 = torch.float64


def oracle(diffusion: GaussianDiffusion, x0: torch.Tensor, noise: torch.Tensor, variance: float = 0.0):
    """The closed-form target of the diffusion's prediction type (exact_denoiser), plus a constant variance output
    when one is learned."""
    target = exact_denoiser(diffusion.prediction_type, x0, diffusion.betas, eps=noise)

    def denoise_fn(x_t, t):
        if not diffusion.learns_variance:
            return target(x_t, t)
        return torch.cat([target(x_t, t), torch.full_like(x_t, variance)], dim=diffusion.channel_dim)

    return denoise_fn


def data(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, shape, generator=g).to(F64) / 127.5 - 1.0
    return x0, torch.randn(shape, dtype=F64, generator=g)


@pytest.mark.parametrize(
    "settings, keys",
    [
        (dict(loss_type="mse"), {"loss", "mse"}),
        (dict(loss_type="kl"), {"loss", "vb"}),
        (dict(loss_type="kl", variance_type="learned_range"), {"loss", "vb"}),
        (dict(loss_type="hybrid", variance_type="learned_range"), {"loss", "mse", "vb"}),
        (dict(loss_type="mse", variance_type="learned"), {"loss", "mse", "vb"}),
    ],
)
def test_loss_keys_and_per_sample_shapes(settings, keys):
    diffusion = GaussianDiffusion(num_timesteps=T, **settings)
    x0, noise = data((3, 2, 4, 4))
    net = torch.nn.Conv2d(2, 4 if diffusion.learns_variance else 2, 1).to(F64)
    terms = diffusion.training_losses(lambda x, t: net(x), x0, torch.tensor([0, 5, T - 1]), noise=noise)
    assert set(terms) == keys
    assert all(value.shape == (3,) for value in terms.values())
    terms["loss"].sum().backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v", "mu"])
def test_oracle_model_has_zero_mse(prediction_type):
    diffusion = GaussianDiffusion(num_timesteps=T, prediction_type=prediction_type)
    x0, noise = data((4, 3, 2))
    t = torch.tensor([0, 1, 20, T - 1])
    terms = diffusion.training_losses(oracle(diffusion, x0, noise), x0, t, noise=noise)
    assert torch.allclose(terms["mse"], torch.zeros(4, dtype=F64), atol=1e-20)


@pytest.mark.parametrize("prediction_type", ["eps", "mu"])
def test_kl_loss_with_oracle_is_zero_after_t0(prediction_type):
    diffusion = GaussianDiffusion(num_timesteps=T, prediction_type=prediction_type, loss_type="kl")
    x0, noise = data((4, 1, 4, 4), seed=1)
    t = torch.tensor([0, 1, 17, T - 1])
    terms = diffusion.training_losses(oracle(diffusion, x0, noise), x0, t, noise=noise)
    assert torch.allclose(terms["vb"][1:], torch.zeros(3, dtype=F64), atol=1e-10)
    assert terms["vb"][0] > 0  # the decoder's codelength of 8-bit data at t = 0
    assert torch.allclose(terms["loss"], T * terms["vb"])


def test_hybrid_bound_trains_only_the_variance():
    """Stop-gradient on the mean: d loss / d mean-output is the MSE's gradient alone (Nichol & Dhariwal)."""
    diffusion = GaussianDiffusion(num_timesteps=T, variance_type="learned_range", loss_type="hybrid", channel_dim=-1)
    x0, noise = data((3, 5, 2), seed=2)  # a field (B, N, C)
    output = torch.randn(3, 5, 4, dtype=F64, requires_grad=True)
    terms = diffusion.training_losses(lambda x, t: output, x0, torch.tensor([0, 9, 30]), noise=noise)
    mean_grad_mse = torch.autograd.grad(terms["mse"].sum(), output, retain_graph=True)[0].chunk(2, -1)[0]
    mean_grad_total, variance_grad_total = torch.autograd.grad(terms["loss"].sum(), output)[0].chunk(2, -1)
    assert torch.allclose(mean_grad_total, mean_grad_mse)
    assert variance_grad_total.abs().sum() > 0
    assert torch.allclose(terms["loss"], terms["mse"] + 1e-3 * T * terms["vb"])


def test_mse_with_learned_variance_equals_hybrid():
    x0, noise = data((2, 1, 4, 4), seed=3)
    output = torch.randn(2, 2, 4, 4, dtype=F64)
    t = torch.tensor([2, 11])
    mse, hybrid = (
        GaussianDiffusion(num_timesteps=T, variance_type="learned", loss_type=loss).training_losses(
            lambda x, t: output, x0, t, noise=noise
        )
        for loss in ("mse", "hybrid")
    )
    assert all(torch.equal(mse[key], hybrid[key]) for key in ("loss", "mse", "vb"))


def test_continuous_data_trains_with_the_bound_but_has_no_bits_per_dim():
    diffusion = GaussianDiffusion(num_timesteps=T, loss_type="kl", num_levels=None)
    x0, noise = data((2, 6, 3), seed=4)
    terms = diffusion.training_losses(oracle(diffusion, x0, noise), x0, torch.tensor([0, 3]), noise=noise)
    assert torch.isfinite(terms["loss"]).all()
    with pytest.raises(ValueError, match="num_levels=None"):
        diffusion.calc_bpd_loop(oracle(diffusion, x0, noise), x0)


def hand_tables(num_timesteps: int):
    """alpha_t, a_bar_t and a_bar_(t-1) of Ho et al.'s linear schedule (1e-4 to 0.02), written out here."""
    betas = np.linspace(1e-4, 0.02, num_timesteps, dtype=np.float64)
    alpha_bar = np.cumprod(1.0 - betas)
    return 1.0 - betas, alpha_bar, np.concatenate([[1.0], alpha_bar[:-1]])


@pytest.mark.parametrize("prediction_type", ["v", "mu"])
@pytest.mark.parametrize("steps", [None, "ddim5"])
def test_v_and_mu_targets_are_their_closed_forms(prediction_type, steps):
    """The MSE of an arbitrary output y against the target written out by hand:
    v = sqrt(a_bar_t) eps - sqrt(1 - a_bar_t) x0 (Salimans & Ho 2022, Sect. 4);
    mu~_t = sqrt(a_bar_(t-1)) beta_t / (1 - a_bar_t) x0 + sqrt(alpha_t) (1 - a_bar_(t-1)) / (1 - a_bar_t) x_t
    (Ho et al. Eq. 7), with x_t = sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) eps. Respaced, the network still predicts
    the original process's one-step quantities at the original step s (its a_bar_s, a_bar_(s-1), alpha_s)."""
    base = GaussianDiffusion(num_timesteps=T, prediction_type=prediction_type)
    diffusion = base if steps is None else base.respaced(steps)
    kept = np.arange(T) if steps is None else np.arange(0, T, T // 5)
    alphas, alpha_bar, alpha_bar_prev = (table[kept] for table in hand_tables(T))
    x0, noise = data((len(kept), 2, 3), seed=5)
    output = torch.randn(len(kept), 2, 3, dtype=F64, generator=torch.Generator().manual_seed(6))
    t = torch.arange(len(kept))
    seen = []

    def network(x_t, step):
        seen.append(step)
        return output

    terms = diffusion.training_losses(network, x0, t, noise=noise)
    assert torch.equal(seen[0], torch.from_numpy(kept))  # the network is told the original steps
    a, a_prev, alpha = (torch.from_numpy(v)[:, None, None] for v in (alpha_bar, alpha_bar_prev, alphas))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    if prediction_type == "v":
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
    else:
        target = a_prev.sqrt() * (1 - alpha) / (1 - a) * x0 + alpha.sqrt() * (1 - a_prev) / (1 - a) * x_t
    expected = ((target - output) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(terms["mse"], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_min_snr_weighting_gives_x0_error_weight_min_snr_gamma(prediction_type):
    # Hang et al. 2023: whatever the target, the loss is min(SNR_t, gamma) * ||x0_hat - x0||^2, with x0_hat read off
    # the prediction by the closed forms below (written here, not taken from the class)
    gamma = 5.0
    diffusion = GaussianDiffusion(schedule="cosine", num_timesteps=T, prediction_type=prediction_type,
                                  min_snr_gamma=gamma)
    x0, noise = data((T, 3, 4, 4))
    t = torch.arange(T)
    prediction = torch.randn(x0.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    loss = diffusion.training_losses(lambda x_t, step: prediction, x0, t, noise=noise)["loss"]
    abar = torch.from_numpy(np.cumprod(1 - diffusion.betas))[:, None, None, None]
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    x0_hat = {"eps": (x_t - (1 - abar).sqrt() * prediction) / abar.sqrt(), "x0": prediction,
              "v": abar.sqrt() * x_t - (1 - abar).sqrt() * prediction}[prediction_type]
    snr = (abar / (1 - abar)).flatten()
    expected = snr.clamp(max=gamma) * (x0_hat - x0).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-9)
    assert (snr > gamma).any() and (snr < gamma).any()  # both branches of the min are exercised


def test_min_snr_weighting_rejects_the_bound_and_the_mean_target():
    for settings in (dict(loss_type="kl"), dict(prediction_type="mu"), dict(min_snr_gamma=0.0),
                     dict(loss_type="mse", variance_type="learned_range")):
        with pytest.raises(ValueError, match="min_snr_gamma"):
            GaussianDiffusion(num_timesteps=T, **{"min_snr_gamma": 5.0, **settings})
