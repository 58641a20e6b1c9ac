"""Field makers: items -> values in [-1, 1] on the right domain, and back."""
import numpy as np
import pytest
import torch

from datamodules.fields import Grid, LatLon, Sphere
from datamodules.images import ImageGrid, levels_to_unit, unit_to_levels
from datamodules.latlon import LatLonGrid
from datamodules.spherical import ImageSphere, plane_to_sphere, sphere_to_plane
from datamodules.voxels import VoxelGrid, resample_voxels


class ArraySource:
    """An in-memory source with the Source attributes."""

    def __init__(self, splits, num_levels, channels=None):
        self._splits, self.num_levels = splits, num_levels
        first = next(iter(splits.values()))
        self.item_shape = first.shape[1:]
        self.channels = channels or (first.shape[-1] if first.ndim == 4 and num_levels != 2 else 1)

    def splits(self):
        return self._splits


@pytest.fixture
def rgb_source():
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    return ArraySource({"train": images, "test": images[:2]}, 256)


def test_fields_levels_scaling_round_trips():
    levels = np.arange(17, dtype=np.uint8)
    values = levels_to_unit(levels, 17)
    assert values[0] == -1 and values[-1] == 1 and values.dtype == np.float32
    assert np.array_equal(unit_to_levels(values, 17), levels)
    assert unit_to_levels(np.array([-3.0, 3.0]), 256).tolist() == [0, 255]


def test_fields_image_grid(rgb_source):
    maker = ImageGrid(rgb_source)
    assert maker.domain == Grid((12, 12)) and maker.signal_dim == 3 and maker.num_levels == 256
    items = rgb_source.splits()["train"]
    values = maker.to_values(items)
    assert values.shape == (5, 144, 3) and values.dtype == np.float32
    assert np.allclose(values[1, 12 * 3 + 4], items[1, 3, 4] / 255 * 2 - 1)  # row-major points
    assert np.array_equal(maker.to_raw(values), items)
    assert np.array_equal(maker.to_raw(torch.from_numpy(values)), items)
    assert maker.splits()["test"].shape == (2, 12, 12, 3)


def test_fields_image_grid_resizes(rgb_source):
    maker = ImageGrid(rgb_source, resolution=6, resample="box")
    items = rgb_source.splits()["train"]
    values = maker.to_values(items)
    assert maker.domain.shape == (6, 6) and values.shape == (5, 36, 3)
    block_mean = items.reshape(5, 6, 2, 6, 2, 3).mean(axis=(2, 4))
    assert np.abs(maker.to_raw(values).astype(float) - block_mean).max() <= 1
    assert ImageGrid(rgb_source).at_resolution(24).to_raw(np.zeros((1, 576, 3))).shape == (1, 24, 24, 3)
    digits = ArraySource({"all": np.kron(np.eye(4) * 16, np.ones((2, 2))).astype(np.uint8)[None, ..., None]}, 17)
    upsized = ImageGrid(digits, resolution=16).to_values(digits.splits()["all"])  # lanczos rings past level 16
    assert upsized.min() >= -1 and upsized.max() == 1
    with pytest.raises(ValueError, match=r"\(M, 12, 12, 3\)"):
        maker.to_values(items[:, :8])
    with pytest.raises(ValueError, match=r"\(M, 36, 3\)"):
        maker.to_raw(values[:, :30])


def test_image_grid_requantises_to_fewer_levels_after_resizing():
    ramp = ArraySource({"all": np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)}, 256)
    five_bit = ImageGrid(ramp, num_levels=32)
    levels = five_bit.to_raw(five_bit.to_values(ramp.splits()["all"]))
    assert five_bit.num_levels == 32 and np.array_equal(levels.ravel(), np.arange(256) // 8)  # the top 5 bits
    digits = ArraySource({"all": np.arange(17, dtype=np.uint8).reshape(1, 1, 17, 1)}, 17)
    binary = ImageGrid(digits, num_levels=2)
    assert np.array_equal(binary.to_values(digits.splits()["all"]).ravel(), np.repeat([-1.0, 1.0], [9, 8]))
    assert binary.at_resolution(34).num_levels == 2
    resized = ImageGrid(ramp, resolution=8, resample="box", num_levels=32)  # resized first, so on the 5-bit grid
    values = resized.to_values(ramp.splits()["all"])
    assert np.allclose((values + 1) * 31 / 2, np.rint((values + 1) * 31 / 2), atol=1e-5)
    with pytest.raises(ValueError, match="must be in 2..17"):
        ImageGrid(digits, num_levels=32)


def test_fields_stereographic_projection_maps():
    q = np.random.default_rng(1).normal(size=(50, 2)) * 2
    xyz = plane_to_sphere(q)
    assert np.allclose(np.linalg.norm(xyz, axis=-1), 1)
    assert np.allclose(sphere_to_plane(xyz), q)
    assert np.allclose(plane_to_sphere(np.zeros(2)), [0, 0, -1])  # the image centre sits on the south pole
    assert np.allclose(plane_to_sphere(np.array([2.0, 0.0])), [1, 0, 0])  # radius 2 is the equator


def grey_source(image):
    return ArraySource({"all": image[None, ..., None]}, 256)


def test_fields_image_sphere_centre_goes_to_the_south_pole():
    image = np.zeros((16, 16), np.uint8)
    image[7:9, 7:9] = 255  # a bright dot at the image centre
    maker = ImageSphere(grey_source(image), bandwidth=16)
    assert maker.domain == Sphere((32, 32))
    values = maker.to_values(image[None, ..., None])
    assert values.shape == (1, 32 * 32, 1) and values.min() >= -1 and values.max() <= 1
    coords = maker.domain.coords().numpy()
    brightest = coords[values[0, :, 0] > 0]
    assert len(brightest) and (brightest[:, 2] < -0.9).all()  # the dot's pixels lie within 0.4 of q = 0
    centroid = ((values[0] + 1) * coords).sum(0)
    assert np.allclose(centroid / np.linalg.norm(centroid), [0, 0, -1], atol=1e-3)
    assert (values[0, coords[:, 2] > 0] == -1).all()  # the northern hemisphere stays black


def test_fields_image_sphere_orientation():
    """Image rows run along +x and columns along -y (the picture reads unmirrored from outside)."""
    images = np.zeros((2, 16, 16, 1), np.uint8)
    images[0, 1:3, 7:9] = 255  # top centre
    images[1, 7:9, 1:3] = 255  # middle left
    maker = ImageSphere(ArraySource({"all": images}, 256), bandwidth=32)
    values = maker.to_values(images)
    top, left = (((values[i] + 1) * maker.domain.coords().numpy()).sum(0) for i in range(2))
    assert top[0] < -0.5 * np.abs(top).max() and abs(top[1]) < 1e-3 * np.abs(top).max()
    assert left[1] > 0.5 * np.abs(left).max() and abs(left[0]) < 1e-3 * np.abs(left).max()


def test_fields_image_sphere_round_trip_of_a_smooth_pattern():
    rows, cols = np.meshgrid(np.linspace(-1, 1, 24), np.linspace(-1, 1, 24), indexing="ij")
    pattern = 128 + 90 * np.sin(2 * rows) * np.cos(1.5 * cols)
    images = np.stack([pattern, 255 - pattern]).round().astype(np.uint8)[..., None]
    maker = ImageSphere(ArraySource({"all": images}, 256), bandwidth=32)
    back = maker.to_raw(maker.to_values(images))
    assert back.shape == images.shape and back.dtype == np.uint8
    inner = (np.abs(rows) < 0.85) & (np.abs(cols) < 0.85)  # away from the zero-padded border
    assert np.abs(back.astype(float) - images)[:, inner].max() <= 6
    assert maker.at_resolution(16).domain == Sphere((16, 16))


def test_fields_image_sphere_is_vectorised_over_channels_and_batch(rgb_source):
    maker = ImageSphere(rgb_source, bandwidth=8, scale=2.0)
    items = rgb_source.splits()["train"]
    values = maker.to_values(items)
    assert values.shape == (5, 256, 3)
    single = np.concatenate([maker.to_values(items[i:i + 1]) for i in range(5)])
    assert np.allclose(values, single, atol=1e-6)
    assert maker.to_raw(values).shape == (5, 12, 12, 3)
    with pytest.raises(ValueError, match="scale"):
        ImageSphere(rgb_source, 8, scale=0)


def latlon_source():
    rng = np.random.default_rng(2)
    return ArraySource({"train": rng.uniform(250, 300, (4, 5, 8, 2)).astype(np.float32),
                        "test": rng.uniform(240, 310, (2, 5, 8, 2)).astype(np.float32)}, None)


def test_fields_latlon_grid_scales_by_train_stats():
    source = latlon_source()
    maker = LatLonGrid(source)
    assert maker.domain == LatLon((5, 8)) and maker.signal_dim == 2 and maker.num_levels is None
    train = source.splits()["train"]
    values = maker.to_values(train)
    assert values.shape == (4, 40, 2)
    assert np.allclose(values.min(axis=(0, 1)), -1) and np.allclose(values.max(axis=(0, 1)), 1)
    test = source.splits()["test"]
    assert np.allclose(maker.to_raw(maker.to_values(test)), test, atol=1e-4)  # beyond [-1, 1], still inverted
    given = LatLonGrid(source, minimum=200.0, maximum=[300.0, 400.0])
    assert np.allclose(given.to_values(train)[..., 1], (train[..., 1].reshape(4, 40) - 200) / 200 * 2 - 1)
    assert given.at_resolution((9, 16)).to_raw(np.zeros((1, 144, 2))).shape == (1, 9, 16, 2)
    with pytest.raises(ValueError, match="both"):
        LatLonGrid(source, minimum=0.0)


def test_fields_voxel_downsampling_keeps_a_solid_cube():
    voxels = np.zeros((2, 16, 16, 16), bool)
    voxels[:, 4:12, 4:12, 4:12] = True
    cube = np.zeros((8, 8, 8), bool)
    cube[2:6, 2:6, 2:6] = True
    for mode in ("any", "trilinear"):
        assert np.array_equal(resample_voxels(voxels, 8, mode)[1], cube)
    with pytest.raises(ValueError, match="divide"):
        resample_voxels(voxels, 6, "any")


def test_fields_voxel_grid_values_and_raw():
    voxels = np.zeros((3, 16, 16, 16), bool)
    voxels[:, 4:12, 4:12, 4:12] = True
    maker = VoxelGrid(ArraySource({"all": voxels}, 2), resolution=8)
    assert maker.domain == Grid((8, 8, 8)) and maker.signal_dim == 1 and maker.num_levels == 2
    values = maker.to_values(voxels)
    assert values.shape == (3, 512, 1) and set(np.unique(values)) == {-1.0, 1.0}
    raw = maker.to_raw(values)
    assert raw.dtype == bool and raw.shape == (3, 8, 8, 8) and raw.sum() == 3 * 64
    assert VoxelGrid(ArraySource({"all": voxels}, 2)).domain == Grid((16, 16, 16))
    assert maker.at_resolution(4).domain == Grid((4, 4, 4))
