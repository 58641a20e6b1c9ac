"""Chamfer distance, coverage and MMD on hand-made point sets; marching-cubes surface sampling."""
import numpy as np
import pytest
import torch

from evaluation.geometry import chamfer_distance, coverage_mmd, surface_point_clouds, surface_points


def _point_clouds(positions, num_points=4):
    """Clouds that are `num_points` copies of one point on the x axis each."""
    clouds = np.zeros((len(positions), num_points, 3), dtype=np.float32)
    clouds[:, :, 0] = np.asarray(positions)[:, None]
    return clouds


def test_chamfer_hand_computed():
    a = np.array([[[0, 0, 0], [1, 0, 0]]], dtype=np.float32)
    b = np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]]], dtype=np.float32)
    # a -> b: mean(0, 1) = 0.5; b -> a: 0
    assert chamfer_distance(a, b).item() == pytest.approx(0.5)
    assert chamfer_distance(b, a).item() == pytest.approx(0.5)
    assert chamfer_distance(a, a).item() == pytest.approx(0.0)


def test_chamfer_chunking_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 7, 3)).astype(np.float32), rng.random((4, 9, 3)).astype(np.float32)
    brute = np.array([[((x[:, None] - y[None]) ** 2).sum(-1).min(1).mean()
                       + ((x[:, None] - y[None]) ** 2).sum(-1).min(0).mean() for y in b] for x in a])
    np.testing.assert_allclose(chamfer_distance(a, b).numpy(), brute, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chamfer_distance(a, b, budget=1).numpy(), brute, rtol=1e-5, atol=1e-6)


def test_coverage_and_mmd_hand_computed():
    reference = _point_clouds([0.0, 4.0])
    # single-point clouds: Chamfer = 2 d^2. Generated at 0, 0.1, 5 -> nearest references 0, 0, 1: full coverage;
    # MMD = mean(min_g CD(g, r0) = 0, min_g CD(g, r1) = 2 * 1^2) = 1
    result = coverage_mmd(_point_clouds([0.0, 0.1, 5.0]), reference)
    assert result["coverage"] == pytest.approx(1.0) and result["mmd"] == pytest.approx(1.0, rel=1e-5)
    # generated at 0, 0.1, -1 all pick reference 0: coverage 1/2; MMD = (0 + 2 * 3.9^2) / 2
    result = coverage_mmd(_point_clouds([0.0, 0.1, -1.0]), reference)
    assert result["coverage"] == pytest.approx(0.5) and result["mmd"] == pytest.approx(3.9**2, rel=1e-5)


def test_surface_points_of_a_full_grid_lie_on_the_cube_boundary():
    points = surface_points(np.ones((8, 8, 8), dtype=bool), num_points=512, rng=0)
    assert points.shape == (512, 3) and points.dtype == np.float32
    extent = np.abs(points).max(1)  # faces at +-1 (halfway to the padding); marching cubes bevels the edges
    assert (extent <= 1 + 1e-5).all() and (extent >= 1 - 1 / 8).all()
    assert (np.abs(extent - 1) < 1e-5).mean() > 0.7


def test_surface_points_of_a_ball_are_near_its_sphere_and_seeded():
    axis = (np.arange(24) * 2 + 1) / 24 - 1
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    ball = np.linalg.norm(grid, axis=-1) < 0.6
    points = surface_points(torch.from_numpy(ball), num_points=2048, rng=1)
    radii = np.linalg.norm(points, axis=1)
    assert abs(radii.mean() - 0.6) < 2 / 24 and radii.std() < 1 / 24
    np.testing.assert_array_equal(points, surface_points(ball, num_points=2048, rng=1))
    clouds = surface_point_clouds(np.stack([ball, ball]), num_points=64, seed=0)
    assert clouds.shape == (2, 64, 3)


def test_empty_shapes_match_nothing_and_empty_references_are_refused(caplog):
    empty = surface_points(np.zeros((6, 6, 6)), num_points=16)
    assert np.isnan(empty).all() and "empty" in caplog.text
    generated = np.concatenate([_point_clouds([0.0, 4.0]), empty[None, :4]])
    distances = chamfer_distance(generated, _point_clouds([0.0, 4.0]))
    assert torch.isinf(distances[2]).all() and torch.isfinite(distances[:2]).all()
    result = coverage_mmd(generated, _point_clouds([0.0, 4.0]))
    assert result == {"coverage": 1.0, "mmd": 0.0, "empty_fraction": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="reference shapes \\[1\\] are empty"):
        coverage_mmd(_point_clouds([0.0]), np.concatenate([_point_clouds([0.0]), empty[None, :4]]))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="one \\(D, H, W\\) voxel grid"):
        surface_points(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="chamfer_distance wants"):
        chamfer_distance(np.zeros((2, 3)), np.zeros((2, 3, 3)))
