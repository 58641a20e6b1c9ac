"""The samples-file reader: sample.py's own files and any tool's `values` or `images` read back, bad ones refused."""
import numpy as np
import pytest
import torch

from PIL import Image

from datamodules.fields import Grid, Sphere
from datamodules.images import levels_to_unit
from lightning_modules.sampling import read_samples, save_samples

GREY = Grid((8, 8))


def digits_values(count: int = 5, num_levels: int = 17) -> torch.Tensor:
    """(count, 64, 1) fields on the 17-level grid of the digits, spanning [-1, 1]."""
    levels = np.random.default_rng(0).integers(0, num_levels, size=(count, 64, 1))
    levels[:, 0], levels[:, 1] = 0, num_levels - 1
    return torch.from_numpy(levels_to_unit(levels, num_levels))


def write(tmp_path, **arrays):
    path = tmp_path / "samples.npz"
    np.savez(path, **arrays)
    return path


def test_sample_py_files_read_back_exactly_from_values_or_from_images_alone(tmp_path):
    values = digits_values()
    path = save_samples(tmp_path, values, GREY.coords(), GREY)
    read, domain = read_samples(path, GREY, channels=1)
    assert torch.equal(read, values) and domain == GREY
    with np.load(path) as arrays:
        images_only = write(tmp_path / "..", images=arrays["images"])
    read, domain = read_samples(images_only, GREY, channels=1)
    assert torch.allclose(read, values, atol=2 / 255) and domain == GREY


def test_mesh_adds_a_marching_cubes_panel_to_voxel_pictures_and_is_refused_elsewhere(tmp_path):
    cube = Grid((8, 8, 8))
    occupancy = np.zeros((2, 8, 8, 8), np.float32)
    occupancy[:, 2:6, 2:6, 2:6] = 1
    values = torch.from_numpy(occupancy.reshape(2, -1, 1) * 2 - 1)
    widths = {}
    for mesh in (False, True):
        save_samples(tmp_path / str(mesh), values, cube.coords(), cube, mesh=mesh)
        widths[mesh] = Image.open(tmp_path / str(mesh) / "samples.png").size[0]
    assert widths[True] > widths[False] * 1.2  # three projections, then the surface beside them
    with pytest.raises(ValueError, match=r"mesh=true draws marching-cubes surfaces of voxel fields; this model's "
                                         r"fields are on grid 2-D \(images\): drop mesh=true"):
        save_samples(tmp_path, digits_values(), GREY.coords(), GREY, mesh=True)


def test_images_on_the_data_levels_are_read_exactly_and_off_grid_ones_refused(tmp_path):
    images = np.rint((digits_values().numpy().reshape(5, 8, 8, 1) + 1) * 127.5).astype(np.uint8)
    read, _ = read_samples(write(tmp_path, images=images), GREY, 1, num_levels=17)
    assert torch.equal(read, digits_values())
    images[0, 0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"1 pixels \(e.g. value 7\) are not on the 17-level grid"):
        read_samples(write(tmp_path, images=images), GREY, 1, num_levels=17)


def test_completion_reads_the_images_when_a_file_has_both(tmp_path):
    values = digits_values()
    off_grid = values + 0.01 * (values < 0)  # values a continuous sampler wrote; images are the levels
    path = save_samples(tmp_path, values, GREY.coords(), GREY)
    with np.load(path) as arrays:
        both = write(tmp_path / "..", values=off_grid.numpy(), images=arrays["images"])
    assert torch.equal(read_samples(both, GREY, 1, 17, prefer_images=True)[0], values)
    assert torch.equal(read_samples(both, GREY, 1, 17)[0], off_grid)


def test_another_resolution_is_read_on_the_domain_at_that_resolution(tmp_path):
    values = torch.linspace(-1, 1, 3 * 256).reshape(3, 256, 1)
    read, domain = read_samples(write(tmp_path, values=values.numpy()), GREY, 1)
    assert domain == Grid((16, 16)) and torch.equal(read, values)
    images = np.zeros((2, 4, 4, 1), np.uint8)
    assert read_samples(write(tmp_path, images=images), GREY, 1)[1] == Grid((4, 4))


@pytest.mark.parametrize("arrays, message", [
    ({"values": np.where(np.arange(64)[:, None] == 5, np.nan, digits_values().numpy())}, r"5 NaN or infinite entries"),
    ({"values": np.tile(np.arange(64, dtype=np.float32) * 4, (4, 1))[..., None]},
     r"span \[0, 252\], not \[-1, 1\] \(0..255 images go in `images` as uint8, or scale them as x / 127.5 - 1\)"),
    ({"values": np.tile(np.linspace(0, 1, 64, dtype=np.float32), (4, 1))[..., None]},
     r"span \[0, 1\], none below 0: \[0, 1\] data\? fields are in \[-1, 1\]: scale them as 2 x - 1"),
    ({"values": np.zeros((4, 64, 3), np.float32) - 0.5}, r"`values` is float32 \(4, 64, 3\), the data needs float "
                                                        r"\(N, P, 1\)"),
    ({"values": np.zeros((4, 64, 1), np.int64)}, r"int64 .* \(integer images go in `images` as uint8\)"),
    ({"values": np.zeros((0, 64, 1), np.float32)}, r"float32 \(0, 64, 1\)"),
    ({"values": np.zeros((4, 60, 1), np.float32) - 0.5}, r"60 points per field; grid fields have 64 \(\[8, 8\]\)"),
    ({"images": np.zeros((4, 8, 8, 3), np.uint8)},
     r"must hold uint8 images \(N, 8, 8, 1\) .* got uint8 \(4, 8, 8, 3\)"),
    ({"images": np.zeros((4, 8, 8, 1), np.float32)}, r"must hold uint8 images .* got float32"),
    ({"images": np.zeros((4, 64), np.uint8)}, r"`images` is uint8 \(4, 64\), expected uint8 \(N, H, W, 1\)"),
    ({"coords": np.zeros((64, 2), np.float32)}, r"holds neither `values` nor `images`; expected a .npz with"),
])
def test_a_bad_samples_file_is_refused_with_the_expected_format(tmp_path, arrays, message):
    with pytest.raises(ValueError, match=message):
        read_samples(write(tmp_path, **arrays), GREY, channels=1)


def test_files_that_are_not_samples_are_refused_naming_the_format(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no samples file at .*missing.npz; expected a .npz with `values`"):
        read_samples(tmp_path / "missing.npz", GREY, 1)
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=r"text.npz is not a readable .npz"):
        read_samples(tmp_path / "text.npz", GREY, 1)
    np.savez(tmp_path / "objects.npz", values=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"objects.npz is not a readable .npz \(ValueError: Object arrays"):
        read_samples(tmp_path / "objects.npz", GREY, 1)
    with pytest.raises(ValueError, match=r"holds `images`, but the data is on a sphere domain: give `values`"):
        read_samples(write(tmp_path, images=np.zeros((2, 8, 8, 1), np.uint8)), Sphere((8, 8)), 1)
