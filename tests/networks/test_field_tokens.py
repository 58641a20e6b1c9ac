"""Score-field tokens: width, layout [Fourier(coords), values, time features], the two time spacings, ml-mcf's
separate part embeddings and the value-modulated Fourier features."""
import pytest
import torch

from networks.embeddings import FourierFeatures, timestep_embedding
from networks.score_fields.tokens import FieldTokenizer


def test_token_width_matches_the_paper_recipe():
    # 2-D coords with 10 bands (42) + RGB (3) + t with 64 bands (129 linear: with the raw position), dpf.md Sect. 2.2
    assert FieldTokenizer(2, 3, time_spacing="linear").out_dim == 174
    assert FieldTokenizer(3, 1, time_spacing="linear").out_dim == 63 + 1 + 129
    assert FieldTokenizer(2, 3).out_dim == 42 + 3 + 128  # geometric: 64 sin + 64 cos


def test_token_layout_and_linear_time_normalisation():
    tokenizer = FieldTokenizer(2, 3, coord_bands=4, coord_max_resolution=16, time_bands=8, num_timesteps=11,
                               time_spacing="linear")
    coords = torch.rand(2, 5, 2) * 2 - 1
    values = torch.randn(2, 5, 3)
    tokens = tokenizer(coords, values, torch.tensor([0, 10]))
    coord_width = 2 * 9
    torch.testing.assert_close(tokens[..., :coord_width], FourierFeatures(4, 16)(coords))
    torch.testing.assert_close(tokens[..., coord_width:coord_width + 3], values)
    time = tokens[..., coord_width + 3:]
    # t = 0 and t = T - 1 map to -1 and +1: the raw position leads the time features, shared by every point
    torch.testing.assert_close(time[0, :, 0], torch.full((5,), -1.0))
    torch.testing.assert_close(time[1, :, 0], torch.full((5,), 1.0))
    torch.testing.assert_close(time[1], FourierFeatures(8, 11)(torch.ones(1, 1)).expand(5, -1))


def test_geometric_time_bands_span_every_scale_of_t():
    tokenizer = FieldTokenizer(2, 1, coord_bands=4, time_bands=16, num_timesteps=1000)
    t = torch.tensor([3, 700])
    time = tokenizer(torch.zeros(2, 4, 2), torch.zeros(2, 4, 1), t)[..., 2 * 9 + 1:]
    torch.testing.assert_close(time, timestep_embedding(t, 32)[:, None].expand(-1, 4, -1))
    # DDPM's frequencies 1 .. 1e-4 per step (tests/networks/test_embeddings.py): periods 2 pi .. 2 pi 1e4 steps.
    # The linear bands on t in [-1, 1]: a period of 2 / f units is (T - 1) / f steps, all but one under 30 steps
    linear = FieldTokenizer(2, 1, time_bands=16, num_timesteps=1000, time_spacing="linear")
    periods_in_steps = 999 / linear.linear_time_features.freqs
    assert (periods_in_steps < 30).sum() == 15 and periods_in_steps.max() == pytest.approx(999)


def test_separate_tokens_embed_each_part_on_its_own():
    torch.manual_seed(0)
    tokenizer = FieldTokenizer(2, 1, coord_bands=4, time_bands=8, num_timesteps=100, tokens="separate",
                               embed_dim=12)
    assert tokenizer.out_dim == 36
    coords, values, t = torch.rand(1, 5, 2) * 2 - 1, torch.randn(1, 5, 1), torch.tensor([40])
    tokens = tokenizer(coords, values, t)
    changed_values = tokenizer(coords, values + 1, t)
    changed_t = tokenizer(coords, values, t + 1)
    # the value embedding is the middle 12 channels, the time embedding the last 12, shared by every point
    assert torch.equal(changed_values[..., :12], tokens[..., :12]) and torch.equal(changed_values[..., 24:],
                                                                                   tokens[..., 24:])
    assert not torch.allclose(changed_values[..., 12:24], tokens[..., 12:24])
    assert torch.equal(changed_t[..., :24], tokens[..., :24]) and not torch.allclose(changed_t, tokens)
    assert torch.allclose(tokens[..., 24:], tokens[:, :1, 24:].expand(-1, 5, -1))
    assert FieldTokenizer(2, 1, coord_bands=4, tokens="separate").out_dim == 3 * 18  # default: coord feature width


def test_modulated_tokens_append_each_channel_times_the_coordinate_features():
    tokenizer = FieldTokenizer(2, 3, coord_bands=4, time_bands=8, num_timesteps=100, tokens="modulated")
    coord_width, plain = 2 * 9, 2 * 9 + 3 + 16
    assert tokenizer.out_dim == plain + 3 * coord_width
    coords, values, t = torch.rand(2, 5, 2) * 2 - 1, torch.randn(2, 5, 3), torch.tensor([3, 40])
    tokens = tokenizer(coords, values, t)
    concat = FieldTokenizer(2, 3, coord_bands=4, time_bands=8, num_timesteps=100)(coords, values, t)
    torch.testing.assert_close(tokens[..., :plain], concat)
    products = tokens[..., plain:].reshape(2, 5, 3, coord_width)
    torch.testing.assert_close(products, values[..., None] * FourierFeatures(4, 64)(coords)[..., None, :])
    # the mean token over a field holds its Fourier coefficients: sum_i v_i cos(w x_i), not only the mean value
    grid = torch.linspace(-1, 1, 16)[None, :, None].expand(1, -1, 2)
    bump, shifted = (torch.exp(-((grid[..., :1] - centre) / 0.2) ** 2) for centre in (-0.5, 0.5))
    assert torch.allclose(bump.mean(), shifted.mean(), atol=1e-6)
    means = [tokenizer(grid, x.expand(-1, -1, 3), t[:1])[..., plain:].mean(1) for x in (bump, shifted)]
    assert not torch.allclose(means[0], means[1], atol=1e-2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(time_spacing="log"), "time_spacing='log' is not one of"),
    (dict(tokens="sum"), "tokens='sum' is not one of"),
    (dict(embed_dim=8), "embed_dim=8 is the width of tokens=separate"),
    (dict(time_bands=1), "time_spacing=geometric needs time_bands >= 2"),
])
def test_bad_token_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FieldTokenizer(2, 1, **kwargs)
