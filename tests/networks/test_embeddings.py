"""Timestep embedding and Fourier features against their closed forms."""
import math

import pytest
import torch

from networks.embeddings import FourierFeatures, timestep_embedding


def test_timestep_embedding_matches_closed_form():
    t = torch.tensor([0, 1, 37, 999])
    dim = 8
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for row, step in enumerate(t.tolist()):
        for i in range(half):
            freq = math.exp(-math.log(10000) * i / (half - 1))
            assert emb[row, i].item() == pytest.approx(math.sin(step * freq), abs=1e-5)
            assert emb[row, half + i].item() == pytest.approx(math.cos(step * freq), abs=1e-5)


def test_timestep_embedding_spans_frequencies_one_to_inverse_max_period():
    emb = timestep_embedding(torch.tensor([1.0]), 6, max_period=100.0)
    # frequencies 1, 1/10, 1/100: the first and last columns of each phase pin both ends
    assert emb[0, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)
    assert emb[0, 2].item() == pytest.approx(math.sin(0.01), abs=1e-6)
    assert emb[0, 5].item() == pytest.approx(math.cos(0.01), abs=1e-6)


def test_timestep_embedding_odd_dim_pads_a_zero_column_and_accepts_float_t():
    emb = timestep_embedding(torch.tensor([3.0, 5.0]), 9)
    assert emb.shape == (2, 9)
    assert torch.all(emb[:, -1] == 0)
    torch.testing.assert_close(emb, timestep_embedding(torch.tensor([3, 5]), 9))


@pytest.mark.parametrize("dim, t", [(3, torch.zeros(2)), (8, torch.zeros(2, 1))])
def test_timestep_embedding_rejects_bad_input(dim, t):
    with pytest.raises(ValueError, match="timestep_embedding"):
        timestep_embedding(t, dim)


def test_fourier_features_dims():
    assert FourierFeatures(10, 64).out_dim(2) == 42
    assert FourierFeatures(64, 1000).out_dim(1) == 129
    assert FourierFeatures(10, 64, concat_pos=False).out_dim(3) == 60
    pos = torch.rand(2, 5, 3) * 2 - 1
    assert FourierFeatures(10, 64)(pos).shape == (2, 5, 63)
    assert FourierFeatures(10, 64, concat_pos=False)(pos).shape == (2, 5, 60)


def test_fourier_features_values_follow_perceiver_layout():
    features = FourierFeatures(3, 8)  # frequencies linspace(1, 4, 3) = 1, 2.5, 4
    pos = torch.tensor([[0.25, -0.5]])
    freqs = [1.0, 2.5, 4.0]
    sines = [math.sin(math.pi * f * p) for p in (0.25, -0.5) for f in freqs]
    cosines = [math.cos(math.pi * f * p) for p in (0.25, -0.5) for f in freqs]
    expected = torch.tensor([[0.25, -0.5, *sines, *cosines]])
    torch.testing.assert_close(features(pos), expected)


def test_fourier_features_per_dim_resolution():
    features = FourierFeatures(2, (4, 16))  # dim 0: frequencies 1, 2; dim 1: 1, 8
    out = features(torch.tensor([[0.5, 0.5]]))
    expected_sin = [math.sin(math.pi * f * 0.5) for f in (1, 2, 1, 8)]
    torch.testing.assert_close(out[0, 2:6], torch.tensor(expected_sin))
    with pytest.raises(ValueError, match="max_resolution for 2 dims"):
        features(torch.zeros(1, 3))


def test_fourier_features_frequencies_are_not_state():
    assert FourierFeatures(4, 32).state_dict() == {}


@pytest.mark.parametrize("kwargs", [dict(num_bands=0, max_resolution=8), dict(num_bands=4, max_resolution=1)])
def test_fourier_features_rejects_bad_config(kwargs):
    with pytest.raises(ValueError, match="FourierFeatures"):
        FourierFeatures(**kwargs)
