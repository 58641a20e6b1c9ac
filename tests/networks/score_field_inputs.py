"""Random (coords, values) sets for the score-field tests."""
import torch


def field(batch: int, points: int, coord_dim: int = 2, signal_dim: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, points, coord_dim, generator=generator) * 2 - 1
    return coords, torch.randn(batch, points, signal_dim, generator=generator)
