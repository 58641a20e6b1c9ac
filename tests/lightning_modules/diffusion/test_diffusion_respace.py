"""Respacing: the kept steps, alpha_bar preserved at them, and the network sees the original indices."""
import numpy as np
import pytest
import torch

from lightning_modules.diffusion import GaussianDiffusion, respace, space_timesteps


def test_ddim_spacing_keeps_evenly_spaced_steps_from_zero():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim1000") == list(range(1000))


def test_section_spacing():
    kept = space_timesteps(100, "10,10")
    assert len(kept) == 20 and kept == sorted(set(kept))
    first, second = kept[:10], kept[10:]
    assert first[0] == 0 and first[-1] == 49 and second[0] == 50 and second[-1] == 99
    assert space_timesteps(100, [10, 10]) == kept
    assert space_timesteps(100, 10) == space_timesteps(100, "10") == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert space_timesteps(10, "3,2") == [0, 2, 4, 5, 9]  # 10 steps split 5 + 5


def test_bad_spacings_raise_clear_errors():
    with pytest.raises(ValueError, match="ddim250, ddim334"):
        space_timesteps(1000, "ddim300")
    with pytest.raises(ValueError, match="cannot keep 60 steps from a section of 50"):
        space_timesteps(100, "60,10")
    with pytest.raises(ValueError, match="cannot parse"):
        space_timesteps(100, "fifty")
    with pytest.raises(ValueError, match="at least 2 distinct steps"):
        respace(GaussianDiffusion(num_timesteps=100), [0, 100])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_spaced_alpha_bar_equals_base_alpha_bar_at_kept_steps(schedule):
    base = GaussianDiffusion(schedule=schedule, num_timesteps=200)
    spaced = base.respaced("ddim20")
    assert type(spaced) is GaussianDiffusion and spaced.num_timesteps == 20
    np.testing.assert_array_equal(spaced.timestep_map, np.arange(0, 200, 10))
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[spaced.timestep_map], rtol=1e-12)
    assert spaced.betas.dtype == np.float64
    full = base.respaced(200)
    np.testing.assert_allclose(full.betas, base.betas, rtol=1e-10)
    # respacing a respaced process composes the maps; settings carry over
    twice = spaced.respaced("ddim5")
    np.testing.assert_array_equal(twice.timestep_map, np.arange(0, 200, 40))
    np.testing.assert_allclose(twice.alphas_cumprod, base.alphas_cumprod[twice.timestep_map], rtol=1e-12)


def test_the_network_sees_original_timestep_indices():
    base = GaussianDiffusion(num_timesteps=100, prediction_type="v", loss_type="kl")
    spaced = base.respaced("ddim10")
    seen = []

    def recording_denoiser(x, t):
        seen.append(t.tolist())
        return torch.zeros_like(x)

    steps = list(spaced.ddim_sample_loop_progressive(recording_denoiser, (2, 3)))
    assert seen == [[k, k] for k in range(90, -1, -10)]
    assert [step["t"] for step in steps] == list(range(90, -1, -10))
    seen.clear()
    spaced.p_sample_loop(recording_denoiser, (2, 3))
    assert seen == [[k, k] for k in range(90, -1, -10)]
    seen.clear()
    spaced.training_losses(recording_denoiser, torch.zeros(2, 3), torch.tensor([0, 9]))
    assert seen == [[0, 90]]
    seen.clear()
    spaced.calc_bpd_loop(recording_denoiser, torch.zeros(2, 3))
    assert seen == [[k, k] for k in range(0, 100, 10)]
    assert spaced.prediction_type == "v" and spaced.loss_type == "kl"
