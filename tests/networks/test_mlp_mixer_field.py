"""MLP-mixer score field: shape, fixed point count and pairing errors, token mixing."""
import pytest
import torch
from score_field_inputs import field

from networks.score_fields import MLPMixerField

TINY = dict(coord_bands=4, time_bands=8, num_timesteps=100, num_points=9, dim=16, depth=2, token_mlp_dim=8,
            channel_mlp_dim=32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MLPMixerField(2, 3, **TINY).eval()


@pytest.fixture(scope="module")
def inputs():
    coords, context_values = field(2, 9, seed=1)
    _, query_values = field(2, 9, seed=2)
    return coords, context_values, coords, query_values, torch.tensor([0, 99])


def test_output_shape(model, inputs):
    assert model.coord_dim == 2
    assert model(*inputs).shape == (2, 9, 3)
    coords, values = field(1, 9, 3, 1)
    assert MLPMixerField(3, 1, out_dim=2, **TINY)(coords, values, coords, values, torch.tensor([4])).shape == (1, 9, 2)


def test_output_at_a_point_depends_on_the_other_context_points(model, inputs):
    coords, context_values, _, query_values, t = inputs
    changed = context_values.clone()
    changed[:, 1:] += 1.0
    with torch.no_grad():
        delta = model(coords, changed, coords, query_values, t) - model(*inputs)
    assert delta[:, 0].abs().max() > 1e-4


def test_gradients_reach_every_parameter(inputs):
    torch.manual_seed(0)
    model = MLPMixerField(2, 3, **TINY)
    model(*inputs).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_wrong_point_count_names_num_points(model):
    coords, values = field(2, 8)
    with pytest.raises(ValueError, match="fixed point count.*num_points=9"):
        model(coords, values, coords, values, torch.tensor([0, 1]))


def test_different_points_raise(model, inputs):
    coords, context_values, _, query_values, t = inputs
    with pytest.raises(ValueError, match="must equal query_coords"):
        model(coords, context_values, coords.flip(1), query_values, t)


def test_coordinate_dimension_mismatch_raises(model, inputs):
    _, context_values, _, query_values, t = inputs
    coords = torch.zeros(2, 9, 1)
    with pytest.raises(ValueError, match="coord_dim=2"):
        model(coords, context_values, coords, query_values, t)
