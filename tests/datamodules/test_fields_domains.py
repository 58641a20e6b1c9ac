"""The domains of datamodules/fields.py: coordinate layouts, dense round trips, resolutions."""
import math

import pytest
import torch

from datamodules.fields import FieldBatch, Grid, LatLon, Sphere


@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 5)])
def test_fields_grid_dense_round_trip(shape):
    grid = Grid(shape)
    values = torch.randn(2, grid.num_points, 3)
    dense = grid.to_dense(values)
    assert dense.shape == (2, 3, *shape)
    assert torch.equal(grid.from_dense(dense), values)
    # row-major: the point at flat index i sits at the array position unravel(i)
    index = torch.tensor(shape).prod().item() - 2
    position = torch.unravel_index(torch.tensor(index), shape)
    assert torch.equal(dense[(1, 2) + tuple(p.item() for p in position)], values[1, index, 2])


def test_fields_grid_coords_are_pixel_centres_in_the_unit_square():
    coords = Grid((4, 8)).coords()
    assert coords.shape == (32, 2)
    assert coords.min() > -1 and coords.max() < 1
    assert torch.allclose(coords[:, 0].unique(), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(coords[:, 1].unique(), (torch.arange(8) * 2 + 1) / 8 - 1)
    assert torch.equal(coords[1], torch.tensor([-0.75, -0.625]))  # the last axis varies fastest


def test_fields_grid_to_dense_rejects_partial_fields():
    with pytest.raises(ValueError, match="full field"):
        Grid((4, 4)).to_dense(torch.zeros(1, 15, 1))
    with pytest.raises(ValueError, match="2-D"):
        Grid((4,))


def test_fields_sphere_driscoll_healy_layout():
    sphere = Sphere((8, 8))
    assert sphere.bandwidth == 4
    coords = sphere.coords().double().reshape(8, 8, 3)
    assert torch.allclose(coords.norm(dim=-1), torch.ones(8, 8, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(coords[0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(8, 3), atol=1e-7)
    colatitude = torch.arccos(coords[..., 2].clamp(-1, 1))
    assert torch.allclose(colatitude[:, 3], torch.arange(8, dtype=torch.float64) * math.pi / 8, atol=1e-6)
    longitude = torch.atan2(coords[4, :, 1], coords[4, :, 0]) % (2 * math.pi)
    assert torch.allclose(longitude, torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8, atol=1e-6)
    assert coords[..., 2].min() > -1 + 1e-3  # the south pole itself is not on a DH grid
    with pytest.raises(ValueError, match="Driscoll-Healy"):
        Sphere((7, 7))


def test_fields_latlon_poles_and_era5_spacing():
    latlon = LatLon((46, 90))
    latitudes, longitudes = latlon.latitudes(), latlon.longitudes()
    assert latitudes[0] == 90 and latitudes[-1] == -90
    assert torch.allclose(latitudes.diff(), torch.full((45,), -4.0, dtype=torch.float64))
    assert torch.allclose(longitudes.diff(), torch.full((89,), 4.0, dtype=torch.float64)) and longitudes[0] == 0
    coords = latlon.coords().reshape(46, 90, 3)
    assert torch.allclose(coords[0], torch.tensor([0.0, 0.0, 1.0]).expand(90, 3), atol=1e-6)
    assert torch.allclose(coords[-1], torch.tensor([0.0, 0.0, -1.0]).expand(90, 3), atol=1e-6)
    assert torch.allclose(coords[23, 0], torch.tensor([math.cos(math.radians(2.0)), 0.0, -math.sin(math.radians(2.0))]),
                          atol=1e-6)  # row 23 is 2 degrees south, longitude 0 points along +x


def test_fields_at_resolution():
    assert Grid((32, 32)).at_resolution(64).shape == (64, 64)
    assert Grid((8, 8, 8)).at_resolution((4, 4, 2)).coords().shape == (32, 3)
    assert Sphere((16, 16)).at_resolution(32).bandwidth == 16
    assert LatLon((46, 90)).coords((91, 180)).shape == (91 * 180, 3)
    with pytest.raises(ValueError, match="needs 2 sizes"):
        Grid((4, 4)).at_resolution((4, 4, 4))


def test_fields_batch_subset_composes_indices():
    domain = Grid((2, 3))
    batch = FieldBatch.from_values(torch.arange(12.0).reshape(2, 6, 1), domain)
    first = batch.subset(torch.tensor([[5, 0, 2], [1, 1, 4]]))
    second = first.subset(torch.tensor([[2], [0]]))
    assert second.index.tolist() == [[2], [1]]
    assert second.values.flatten().tolist() == [2.0, 7.0]
    assert torch.equal(second.coords[0, 0], domain.coords()[2])


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6)])
def test_fields_grid_interpolate_is_exact_on_centres_and_linear_between(shape):
    grid = Grid(shape)
    dense = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    centres = grid.coords().expand(2, -1, -1)
    torch.testing.assert_close(grid.interpolate(dense, centres), FieldBatch.from_dense(dense, grid).values)
    # a field linear in the coordinates is reproduced exactly anywhere inside the outermost centres
    slope = torch.tensor([0.3, -1.2, 0.7][:grid.coord_dim])
    linear = (centres[0] @ slope).reshape(1, 1, *shape)
    inside = (torch.rand(2, 50, grid.coord_dim, generator=torch.Generator().manual_seed(1)) * 2 - 1) * (
        1 - 1 / torch.tensor(shape, dtype=torch.float32))
    torch.testing.assert_close(grid.interpolate(linear.expand(2, -1, *shape), inside)[..., 0], inside @ slope,
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="interpolate needs dense"):
        grid.interpolate(dense[..., :-1], centres)
