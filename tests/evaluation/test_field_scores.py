"""Generated fields are scored against the real fields prepared as the model's training data were."""
import numpy as np
import pytest
import torch

from datamodules.datamodule import FieldDataModule
from datamodules.fields import Grid
from datamodules.images import ImageGrid, levels_to_full_range, to_images, unit_to_levels
from datamodules.sources.digits import Digits
from datamodules.sources.lfw import LFWFaces
from datamodules.sources.primitives import Primitives
from datamodules.spherical import ImageSphere
from datamodules.voxels import VoxelGrid
from evaluation.extractors import default_extractor_name
from evaluation.field_scores import reference_values, score_generated, scored_images
from evaluation.geometry import chamfer_distance, surface_point_clouds, surface_points


def digits(seed=0, resolution=None):
    return FieldDataModule(ImageGrid(Digits(), resolution), name="digits", seed=seed)


def test_the_reference_key_names_the_indices_and_every_transform():
    key = lambda datamodule, resolution=None: reference_values(datamodule, "train", 300, resolution)[3]  # noqa: E731
    assert key(digits()) == key(digits())
    assert key(digits(seed=1)) != key(digits())  # another data.seed: other training images
    assert key(digits(resolution=16)) != key(digits())  # another transform
    assert key(digits(), resolution=(16, 16)) == key(digits(resolution=16))  # the same images either way


def test_references_pass_through_the_datamodule_s_own_transforms():
    faces = FieldDataModule(ImageGrid(LFWFaces(), 24), name="lfw")  # 25x25 sources trained on at 24x24
    maker, load, count, _ = reference_values(faces, "train", 10)
    assert maker.domain.shape == (24, 24) and load().shape == (10, 24 * 24, 1) and count == 10
    items, indices = faces.split_indices()["train"]
    np.testing.assert_array_equal(load(), faces.field_maker.to_values(items[indices[:10]]))
    # another resolution is made from the source items with the DataModule's resampling, not by resizing 24x24
    maker16, load16, _, _ = reference_values(faces, "train", 10, (16, 16))
    np.testing.assert_array_equal(load16(), faces.field_maker.at_resolution(16).to_values(items[indices[:10]]))


def test_samples_are_quantised_to_the_data_s_levels():
    values = torch.rand(5, 64, 1) * 2 - 1
    images = to_images(values, Grid((8, 8)), 17)
    expected = levels_to_full_range(unit_to_levels(values.numpy(), 17), 17).reshape(5, 8, 8, 1)
    np.testing.assert_array_equal(images, expected)
    assert set(np.unique(images)) <= set(levels_to_full_range(np.arange(17), 17).tolist())


def voxels(resolution):
    return FieldDataModule(VoxelGrid(Primitives(num_train=8, num_test=6, resolution=16, seed=3), resolution),
                           name="primitives")


def test_voxel_references_are_prepared_at_the_training_resolution_and_scored_in_unit_cube_units():
    datamodule = voxels(8)  # 16^3 sources max-pooled to 8^3 for training
    maker, load, _, _ = reference_values(datamodule, "test", None)
    real = load()
    assert real.shape == (6, 8**3, 1)
    scores = score_generated(torch.from_numpy(real), maker.domain, datamodule, ["coverage_mmd"], surface_points=256)
    assert scores["coverage[chamfer]"] == 1.0 and scores["empty_fraction"] == 0.0
    # the same shapes, sampled with other seeds: a small distance, and a quarter of the [-1, 1]^3 one
    dense = maker.domain.to_dense(torch.from_numpy(real))[:, 0].numpy() > 0
    a, b = surface_point_clouds(dense, 256, seed=0), surface_point_clouds(dense, 256, seed=1)
    in_unit_cube = chamfer_distance((a + 1) / 2, (b + 1) / 2).diagonal().mean().item()
    assert chamfer_distance(a, b).diagonal().mean().item() == pytest.approx(4 * in_unit_cube, rel=1e-4)
    assert 0 < scores["mmd[chamfer,unit-cube]"] < 0.01


def test_surface_points_are_uniform_by_area_on_non_cubic_grids():
    volume = np.ones((4, 16, 16), dtype=bool)  # a flat slab filling the grid: [-1, 1]^3 in field coordinates
    points = surface_points(volume, num_points=20000, rng=0)
    on_large_faces = np.isclose(np.abs(points[:, 0]), 1, atol=1e-4).mean()  # the two faces normal to axis 0
    # in [-1, 1]^3 every face of the cube has the same area: the two normal to axis 0 hold a third of it
    assert on_large_faces == pytest.approx(1 / 3, abs=0.03)


def test_sphere_digits_are_scored_by_the_digits_classifier_on_their_back_projection(digits_cnn):
    sphere = FieldDataModule(ImageSphere(Digits(), bandwidth=8), name="sphere_digits")
    maker, load, _, _ = reference_values(sphere, "test", None)
    real = torch.from_numpy(load())
    images = scored_images(real, maker.domain, maker)
    np.testing.assert_array_equal(images, levels_to_full_range(maker.to_raw(real), 17))
    assert images.shape == (len(real), 8, 8, 1)
    assert default_extractor_name("sphere_digits") == "digits-cnn"
    real_scores = score_generated(real, maker.domain, sphere, ["confidence", "fid"], extractor=digits_cnn)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise_scores = score_generated(noise, maker.domain, sphere, ["confidence", "fid"], extractor=digits_cnn)
    # DH 16x16 keeps most of each digit: the classifier is sure of nearly all of them, and of little noise
    assert real_scores["confident[digits-cnn]"] > 0.85 > 0.3 > noise_scores["confident[digits-cnn]"]
    assert real_scores["fid[digits-cnn]"] < 0.1 * noise_scores["fid[digits-cnn]"]


def test_image_metrics_refuse_fields_that_are_not_images():
    cube = Grid((4, 4, 4))
    with pytest.raises(ValueError, match=r"image metrics score 2-D images or sphere fields of projected images "
                                         r"\(ImageSphere\), not grid3d fields made by VoxelGrid"):
        scored_images(torch.zeros(1, 64, 1), cube, voxels(8).field_maker)
