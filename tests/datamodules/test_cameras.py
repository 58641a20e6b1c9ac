"""Pinhole rays and hemisphere poses against their geometric definitions."""
import math

import pytest
import torch

from datamodules.cameras import HemispherePoses, check_rigid, look_at_origin, pixel_directions, rays_from_poses
from datamodules.fields import Rays


def test_a_point_projected_through_the_pinhole_lies_on_its_pixel_s_ray():
    domain = Rays((12, 16), focal=10.0)
    pose = HemispherePoses().sample(1, torch.Generator().manual_seed(3))[0].double()
    rays = rays_from_poses(pose[None], domain)[0].double()
    for row, col, depth in ((3, 5, 2.5), (0, 0, 4.0), (11, 15, 3.2)):
        # the camera-frame point at `depth` that the convention maps to pixel (row, col) (no half-pixel offset)
        camera_point = torch.tensor([(col - 8) / 10 * depth, -(row - 6) / 10 * depth, -depth], dtype=torch.float64)
        world = pose[:3, :3] @ camera_point + pose[:3, 3]
        origin, direction = rays[row * 16 + col, :3], rays[row * 16 + col, 3:]
        t = ((world - origin) @ direction) / (direction @ direction)
        torch.testing.assert_close(origin + t * direction, world, atol=1e-5, rtol=0)
        assert t == pytest.approx(depth, rel=1e-5)  # directions have unit camera depth: t is the z-depth


def test_the_centre_ray_looks_down_minus_z_from_the_camera_centre():
    domain = Rays((8, 8), focal=7.0)
    directions = pixel_directions(8, 8, 7.0)
    torch.testing.assert_close(directions[4 * 8 + 4], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    pose = look_at_origin(torch.tensor([[1.0, 2.0, 3.0]]))
    rays = rays_from_poses(pose, domain)[0]
    torch.testing.assert_close(rays[4 * 8 + 4, 3:].double(), -pose[0, :3, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(rays[:, :3].double(), pose[0, :3, 3].expand(64, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(domain.coords()[:, 3:].double(), directions, atol=1e-6, rtol=0)  # identity pose


def test_hemisphere_poses_are_rigid_look_at_the_origin_and_follow_the_law():
    law = HemispherePoses(azimuth=(-180, 180), elevation=(0, 90), radius=(3.5, 4.5))
    poses = law.sample(4000, torch.Generator().manual_seed(0)).double()
    for pose in poses[:50]:
        check_rigid(pose, "drawn pose")
    position, back, right = poses[:, :3, 3], poses[:, :3, 2], poses[:, :3, 0]
    radius = position.norm(dim=-1)
    torch.testing.assert_close(back, position / radius[:, None], atol=1e-5, rtol=0)  # the view axis hits 0
    assert right[:, 2].abs().max() < 1e-6  # no roll
    assert radius.min() >= 3.5 - 1e-5 and radius.max() <= 4.5 + 1e-5
    elevation = torch.rad2deg(torch.asin(position[:, 2] / radius))
    assert elevation.min() >= -1e-4 and elevation.max() <= 90
    # uniform in angle (not in area): each elevation quarter holds a quarter of the draws
    counts = torch.histc(elevation, bins=4, min=0, max=90) / len(elevation)
    assert (counts - 0.25).abs().max() < 0.03, counts
    overhead = look_at_origin(torch.tensor([[0.0, 0.0, 4.0]]))[0]
    check_rigid(overhead, "overhead")


def test_bad_poses_and_ranges_are_refused():
    with pytest.raises(ValueError, match="4x4"):
        check_rigid(torch.eye(3), "frame 0")
    sheared = torch.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(ValueError, match="frame 7: the pose is not a rigid"):
        check_rigid(sheared, "frame 7")
    mirrored = torch.diag(torch.tensor([-1.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="det"):
        check_rigid(mirrored, "frame 1")
    with pytest.raises(ValueError, match="radius range"):
        HemispherePoses(radius=(4.0, 3.0))
    with pytest.raises(ValueError, match="near < far"):
        Rays((4, 4), focal=2.0, near=6.0, far=2.0)


def test_rays_keep_the_field_of_view_at_another_resolution_and_crop_like_the_official_code():
    domain = Rays((40, 40), focal=55.0)
    doubled = domain.at_resolution((80, 80))
    assert doubled.focal == 110.0 and math.isclose(doubled.focal / 80, domain.focal / 40)
    crop = domain.centre_crop(0.5)
    rows, cols = crop // 40, crop % 40
    assert rows.min() == 10 and rows.max() == 29 and cols.min() == 10 and cols.max() == 29 and len(crop) == 400
