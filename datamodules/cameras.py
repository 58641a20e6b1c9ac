"""Pinhole cameras: the rays of posed views and camera poses on the upper hemisphere.

Conventions (the official NeRF/DietNeRF code's, so Blender-synthetic scenes load as published): a camera-to-world
pose is a 4x4 rigid matrix whose camera looks down its -z axis with +y up; pixel (row j, column i) has the camera
direction ((i - W/2) / f, -(j - H/2) / f, -1) (no half-pixel offset) and is not normalised, so a ray's parameter t
is the camera depth. The world is z-up; the scene is centred at the origin.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from datamodules.fields import Rays

RIGID_TOLERANCE = 1e-3  # Blender exports its matrices in float32 with rounded digits


def pixel_directions(height: int, width: int, focal: float) -> Tensor:
    """(H * W, 3) float64 camera-frame directions of the pixels, row-major."""
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                                indexing="ij")
    directions = torch.stack([(cols - width * 0.5) / focal, -(rows - height * 0.5) / focal, -torch.ones_like(rows)],
                             dim=-1)
    return directions.reshape(-1, 3)


def rays_from_poses(poses: Tensor, domain: Rays) -> Tensor:
    """Camera-to-world poses (V, 4, 4) -> rays (V, H * W, 6) float32: origin (the camera centre) then direction."""
    poses = torch.as_tensor(poses, dtype=torch.float64)
    directions = pixel_directions(*domain.shape, domain.focal).to(poses.device)
    world = torch.einsum("vij,nj->vni", poses[:, :3, :3], directions)
    origins = poses[:, None, :3, 3].expand_as(world)
    return torch.cat([origins, world], dim=-1).float()


def check_rigid(pose, where: str) -> Tensor:
    """`pose` as a float64 (4, 4) tensor, or a ValueError naming `where` unless it is a rigid transform (rotation
    with det +1, translation, last row 0 0 0 1)."""
    pose = torch.as_tensor(pose, dtype=torch.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"{where}: a camera pose is a 4x4 matrix, got shape {list(pose.shape)}")
    rotation = pose[:3, :3]
    orthonormal = torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=RIGID_TOLERANCE)
    last_row = torch.allclose(pose[3], torch.tensor([0.0, 0, 0, 1], dtype=torch.float64), atol=RIGID_TOLERANCE)
    if not (orthonormal and last_row and torch.linalg.det(rotation) > 0):
        raise ValueError(f"{where}: the pose is not a rigid camera-to-world transform (orthonormal rotation with "
                         f"det +1, last row 0 0 0 1, tolerance {RIGID_TOLERANCE}): {pose.tolist()}")
    return pose


def look_at_origin(position: Tensor) -> Tensor:
    """Camera positions (V, 3) -> poses (V, 4, 4) looking at the origin, z-up with no roll (the camera x axis is
    horizontal); a camera straight above the origin gets x = world x."""
    position = torch.as_tensor(position, dtype=torch.float64)
    back = position / position.norm(dim=-1, keepdim=True)  # the camera's +z points away from what it looks at
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(back)
    right = torch.linalg.cross(up, back)
    overhead = right.norm(dim=-1, keepdim=True) < 1e-9
    right = torch.where(overhead, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), right)
    right = right / right.norm(dim=-1, keepdim=True)
    camera_up = torch.linalg.cross(back, right)
    poses = torch.zeros(len(position), 4, 4, dtype=torch.float64)
    poses[:, :3, 0], poses[:, :3, 1], poses[:, :3, 2], poses[:, :3, 3] = right, camera_up, back, position
    poses[:, 3, 3] = 1
    return poses


class HemispherePoses:
    """Cameras looking at the origin from azimuth, elevation (degrees) and radius drawn uniformly in each range:
    DietNeRF's pose law pi (uniform in angle, not in area; the official code's phi in [-90, 0] is elevation 0..90)."""

    def __init__(self, azimuth: Sequence[float] = (-180.0, 180.0), elevation: Sequence[float] = (0.0, 90.0),
                 radius: Sequence[float] = (3.5, 4.5)):
        for name, (low, high), limit in (("azimuth", azimuth, (-360, 360)), ("elevation", elevation, (-90, 90)),
                                         ("radius", radius, (0, math.inf))):
            if not limit[0] <= low <= high <= limit[1] or (name == "radius" and low <= 0):
                raise ValueError(f"pose law {name} range must be low <= high within {list(limit)}"
                                 f"{' and positive' if name == 'radius' else ''}, got [{low}, {high}]")
        self.azimuth, self.elevation, self.radius = tuple(azimuth), tuple(elevation), tuple(radius)

    def positions(self, azimuth: Tensor, elevation: Tensor, radius: Tensor) -> Tensor:
        azimuth, elevation = torch.deg2rad(azimuth.double()), torch.deg2rad(elevation.double())
        return radius.double()[:, None] * torch.stack(
            [elevation.cos() * azimuth.cos(), elevation.cos() * azimuth.sin(), elevation.sin()], dim=-1)

    def sample(self, num_poses: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """(num_poses, 4, 4) float32 camera-to-world poses."""
        draws = torch.rand(3, num_poses, generator=generator, dtype=torch.float64)
        ranges = torch.tensor([self.azimuth, self.elevation, self.radius], dtype=torch.float64)
        azimuth, elevation, radius = ranges[:, :1] + draws * (ranges[:, 1:] - ranges[:, :1])
        return look_at_origin(self.positions(azimuth, elevation, radius)).float()
