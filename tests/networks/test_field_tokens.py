"""Score-field tokens: width, layout [Fourier(coords), values, Fourier(t)] and the t normalisation."""
import torch

from networks.embeddings import FourierFeatures
from networks.score_fields.tokens import FieldTokenizer


def test_token_width_matches_the_paper_recipe():
    # 2-D coords with 10 bands (42) + RGB (3) + t with 64 bands (129), dpf.md Sect. 2.2
    assert FieldTokenizer(2, 3).out_dim == 174
    assert FieldTokenizer(3, 1).out_dim == 63 + 1 + 129


def test_token_layout_and_time_normalisation():
    tokenizer = FieldTokenizer(2, 3, coord_bands=4, coord_max_resolution=16, time_bands=8, num_timesteps=11)
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
