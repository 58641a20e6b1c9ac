import pytest
import torch

from datamodules.fields import FieldBatch, Grid
from datamodules.points import ContextQuerySampler, PointSubset, draw_distinct


def batch(b=3, shape=(4, 5)):
    domain = Grid(shape)
    values = torch.arange(b * domain.num_points, dtype=torch.float32).view(b, -1, 1)
    return FieldBatch.from_values(values, domain)


def test_counts_and_subsets_are_consistent():
    fields = batch()
    context, query = ContextQuerySampler(num_context=7, num_query=0.5)(fields)
    assert context.values.shape == (3, 7, 1) and query.values.shape == (3, 10, 1)
    for sub in (context, query):
        # values and coords of a subset are those of the full field at the recorded index
        expected = torch.gather(fields.values, 1, sub.index.unsqueeze(-1))
        assert torch.equal(sub.values, expected)
        assert torch.equal(sub.coords, fields.domain.coords()[sub.index])


@pytest.mark.parametrize("num_points, count", [(20, 5), (20, 15), (1000, 3)])  # sparse and dense paths
def test_distinct_draws_are_distinct_and_uniform(num_points, count):
    index = draw_distinct(6000, num_points, count, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert index.shape == (6000, count) and index.min() >= 0 and index.max() < num_points
    assert all(len(set(row.tolist())) == count for row in index)
    frequency = torch.bincount(index.flatten(), minlength=num_points).float() / index.shape[0]
    assert torch.allclose(frequency, torch.full((num_points,), count / num_points), atol=0.02)
    # every position of the draw is uniform too (the order is random, not sorted)
    first = torch.bincount(index[:, 0], minlength=num_points).float() / index.shape[0]
    assert torch.allclose(first, torch.full((num_points,), 1 / num_points), atol=0.02 if num_points == 20 else 0.004)


def test_a_sparse_draw_never_touches_every_point():
    """k of N costs O(k): a draw of 8 points of a 10^8-point field allocates nothing of the field's size."""
    index = draw_distinct(2, 10**8, 8, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert index.shape == (2, 8) and all(len(set(row.tolist())) == 8 for row in index)


def test_candidates_restrict_the_draw():
    candidates = torch.tensor([[3, 5, 7, 9], [0, 1, 2, 3]])
    index = PointSubset(0.5).draw(2, 20, torch.device("cpu"), torch.Generator().manual_seed(0), candidates=candidates)
    assert index.shape == (2, 2)
    for row, allowed in zip(index, candidates):
        assert set(row.tolist()) <= set(allowed.tolist()) and len(set(row.tolist())) == 2


def test_same_points_and_replacement():
    context, query = ContextQuerySampler(num_context=6, same_points=True)(batch())
    assert torch.equal(context.index, query.index)
    context, _ = ContextQuerySampler(num_context=50, replacement=True)(batch())
    assert context.num_points == 50


def test_too_many_points_error_names_the_fix():
    with pytest.raises(ValueError, match=r"method.point_sampler.replacement=true"):
        ContextQuerySampler(num_context=2048).check(1024)
    with pytest.raises(ValueError, match="fraction"):
        ContextQuerySampler(num_context=1.5)
    with pytest.raises(ValueError, match="selects no points"):
        PointSubset(0.01).count_for(10)
    with pytest.raises(ValueError, match="num_context == num_query"):
        ContextQuerySampler(num_context=4, num_query=8, same_points=True)
