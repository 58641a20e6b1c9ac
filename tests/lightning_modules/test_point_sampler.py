import pytest
import torch

from datamodules.fields import FieldBatch, Grid
from lightning_modules.point_sampler import PointSampler


def batch(b=3, shape=(4, 5)):
    domain = Grid(shape)
    values = torch.arange(b * domain.num_points, dtype=torch.float32).view(b, -1, 1)
    return FieldBatch.from_values(values, domain)


def test_counts_and_subsets_are_consistent():
    fields = batch()
    context, query = PointSampler(num_context=7, num_query=0.5)(fields)
    assert context.values.shape == (3, 7, 1) and query.values.shape == (3, 10, 1)
    for sub in (context, query):
        # values and coords of a subset are those of the full field at the recorded index
        expected = torch.gather(fields.values, 1, sub.index.unsqueeze(-1))
        assert torch.equal(sub.values, expected)
        assert torch.equal(sub.coords, fields.domain.coords()[sub.index])


def test_without_replacement_points_are_distinct_and_uniform():
    sampler = PointSampler(num_context=5)
    index = sampler.draw(4000, 20, 5, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert all(len(set(row.tolist())) == 5 for row in index[:50])
    frequency = torch.bincount(index.flatten(), minlength=20).float() / index.shape[0]
    assert torch.allclose(frequency, torch.full((20,), 5 / 20), atol=0.03)


def test_same_points_and_replacement():
    context, query = PointSampler(num_context=6, same_points=True)(batch())
    assert torch.equal(context.index, query.index)
    context, _ = PointSampler(num_context=50, replacement=True)(batch())
    assert context.num_points == 50


def test_too_many_points_error_names_the_fix():
    with pytest.raises(ValueError, match="replacement=true"):
        PointSampler(num_context=2048).check(1024)
    with pytest.raises(ValueError, match="fraction"):
        PointSampler(num_context=1.5).check(10)
    with pytest.raises(ValueError, match="num_context == num_query"):
        PointSampler(num_context=4, num_query=8, same_points=True)
