"""Transformer-encoder score field: shape, pairing errors, permutation equivariance, context mixing."""
import pytest
import torch
from score_field_inputs import field

from networks.score_fields import TransformerEncoderField

TINY = dict(coord_bands=4, time_bands=8, num_timesteps=100, dim=16, depth=2, heads=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TransformerEncoderField(2, 3, **TINY).eval()


@pytest.fixture(scope="module")
def inputs():
    coords, context_values = field(2, 9, seed=1)
    _, query_values = field(2, 9, seed=2)
    return coords, context_values, coords, query_values, torch.tensor([0, 99])


def test_output_shape(model, inputs):
    assert model.coord_dim == 2
    assert model(*inputs).shape == (2, 9, 3)
    coords, values = field(1, 5, 3, 1)
    model_3d = TransformerEncoderField(3, 1, out_dim=2, **TINY)
    assert model_3d(coords, values, coords, values, torch.tensor([4])).shape == (1, 5, 2)


def test_permuting_context_and_query_together_permutes_output(model, inputs):
    coords, context_values, _, query_values, t = inputs
    perm = torch.randperm(coords.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(*inputs)
        permuted = model(coords[:, perm], context_values[:, perm], coords[:, perm], query_values[:, perm], t)
    torch.testing.assert_close(permuted, reference[:, perm], atol=1e-5, rtol=1e-5)


def test_output_at_a_point_depends_on_the_other_context_points(model, inputs):
    coords, context_values, _, query_values, t = inputs
    changed = context_values.clone()
    changed[:, 1:] += 1.0
    with torch.no_grad():
        delta = model(coords, changed, coords, query_values, t) - model(*inputs)
    assert delta[:, 0].abs().max() > 1e-4


def test_different_point_counts_raise(model, inputs):
    coords, context_values, _, _, t = inputs
    query_coords, query_values = field(2, 4)
    with pytest.raises(ValueError, match="9 context and 4 query points"):
        model(coords, context_values, query_coords, query_values, t)


def test_different_points_raise(model, inputs):
    coords, context_values, _, query_values, t = inputs
    with pytest.raises(ValueError, match="must equal query_coords"):
        model(coords, context_values, coords.flip(1), query_values, t)


def test_coordinate_dimension_mismatch_raises(model, inputs):
    _, context_values, _, query_values, t = inputs
    coords = torch.zeros(2, 9, 3)
    with pytest.raises(ValueError, match="coord_dim=2"):
        model(coords, context_values, coords, query_values, t)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible by heads"):
        TransformerEncoderField(2, 3, **{**TINY, "heads": 3})
