"""render_fields: picture sizes and modes for every domain, colours, and errors."""
import numpy as np
import pytest
import torch

from datamodules.fields import Grid, LatLon, Sphere
from datamodules.render import colorize, render_fields, tile_images


def random_values(batch, domain, channels, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, domain.num_points, channels)).astype(np.float32)


def test_render_image_grid_layout_and_pixels():
    domain = Grid((8, 8))
    values = random_values(6, domain, 3)
    image = render_fields(values, domain, nrow=3, scale=1, padding=2)
    assert image.mode == "RGB" and image.size == (3 * 10 + 2, 2 * 10 + 2)
    pixels = np.asarray(image)
    second = np.rint((values[1].reshape(8, 8, 3) + 1) * 127.5)
    assert np.array_equal(pixels[2:10, 12:20], second)  # field 1 sits in row 0, column 1
    assert (pixels[:2] == 255).all()  # white padding


def test_render_grey_images_default_square_grid_and_torch_input():
    domain = Grid((8, 8))
    image = render_fields(torch.from_numpy(random_values(64, domain, 1)), domain)
    assert image.mode == "RGB"
    tile = 8 * 4 + 2  # 8 px fields are zoomed 4x to 32 px tiles
    assert image.size == (8 * tile + 2, 8 * tile + 2)
    pixels = np.asarray(image)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey


@pytest.mark.parametrize("domain", [Sphere((16, 16)), LatLon((9, 16))])
def test_render_spherical_fields_map_and_globe(domain):
    image = render_fields(random_values(5, domain, 1), domain, nrow=5)
    size = -(-64 // domain.shape[0]) * domain.shape[0]  # rows zoomed by a whole factor to at least 64 px
    tile_width = 2 * size + 2 + size
    assert image.mode == "RGB" and image.size == (5 * (tile_width + 2) + 2, size + 4)
    pixels = np.asarray(image)
    globe = pixels[2:2 + size, 2 + 2 * size + 2: 2 + tile_width]
    assert (globe[0, 0] == 255).all() and not (globe[size // 2, size // 2] == 255).all()  # a disk on white


def test_render_globe_shows_the_view_centre():
    domain = LatLon((19, 36))
    values = -np.ones((1, domain.num_points, 1), np.float32)
    dense = values.reshape(19, 36)
    dense[9, 9] = 1.0  # equator, 90 degrees east
    picture = np.asarray(render_fields(values, domain, cmap=None, view=(0.0, 90.0), scale=4, padding=0))
    size = 19 * 4
    globe = picture[:, 2 * size + 2:]
    assert (globe[size // 2, size // 2] == 255).all()  # the marked point at the centre of the disk
    away = np.asarray(render_fields(values, domain, cmap=None, view=(0.0, 270.0), scale=4, padding=0))
    assert (away[:, 2 * size + 2:][size // 2, size // 2] == 0).all()


def test_render_voxels_three_projections():
    domain = Grid((8, 8, 8))
    occupancy = -np.ones((2, 8, 8, 8), np.float32)
    occupancy[0, 2:4, 2:6, 1:3] = 1
    image = render_fields(occupancy.reshape(2, -1, 1), domain, nrow=2, scale=2, padding=2)
    tile_width = 3 * 16 + 2 * 2
    assert image.mode == "RGB" and image.size == (2 * (tile_width + 2) + 2, 16 + 4)
    pixels = np.asarray(image)
    along_depth = pixels[2:18, 2:18]  # the projection along axis 0 shows axes (1, 2): rows 2..5, cols 1..2
    filled = (along_depth != 235).any(-1)
    assert np.array_equal(np.argwhere(filled[::2, ::2]).min(0), [2, 1])
    assert np.array_equal(np.argwhere(filled[::2, ::2]).max(0), [5, 2])
    empty = pixels[2:18, 2 + tile_width + 2:2 + tile_width + 18]
    assert (empty == 235).all()


def test_render_voxels_with_a_mesh_panel():
    domain = Grid((8, 8, 8))
    occupancy = -np.ones((1, 8, 8, 8), np.float32)
    occupancy[0, 2:6, 2:6, 2:6] = 1
    image = render_fields(occupancy.reshape(1, -1, 1), domain, scale=4, mesh=True)
    assert image.mode == "RGB" and image.size == (4 * 32 + 3 * 2 + 4, 32 + 4)


def test_render_errors():
    domain = Grid((4, 4))
    with pytest.raises(ValueError, match="1-channel .* or 3-channel"):
        render_fields(np.zeros((1, 16, 2)), domain)
    with pytest.raises(ValueError, match=r"\(B, 16, C\)"):
        render_fields(np.zeros((1, 15, 1)), domain)


def test_render_helpers():
    assert colorize(np.array([[-1.0], [1.0]]), "viridis").shape == (2, 3)
    grid = tile_images(np.zeros((3, 4, 5, 3), np.uint8), nrow=2, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 6 + 1, 3)
