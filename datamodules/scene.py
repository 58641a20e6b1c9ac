"""One scene's posed views as fields on a `Rays` domain, and the DataModule whose splits are views.

A view is a field whose points are its pixels' rays (origin, direction) and whose values are their colours in
[-1, 1]. Loaders yield whole views (`batch_size` views per step; NeRF trains on one); a method draws its ray batch
from them with the shared point sampler (datamodules/points.py).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.cameras import rays_from_poses
from datamodules.datamodule import FieldDataModule
from datamodules.fields import FieldBatch, Rays

# the official DietNeRF view selections: np.random.seed(0); np.random.choice(100, 8, replace=False) (every scene),
# and the one-sided Lego split of configs/unseen_side_14v
OFFICIAL_8_VIEWS = (26, 86, 2, 55, 75, 93, 16, 73)
LEGO_14_ONE_SIDED_VIEWS = (2, 5, 8, 9, 10, 16, 34, 35, 40, 52, 53, 54, 58, 60)


class PosedViews:
    """A scene source's views as fields: `domain` is the scene's camera (from its train split), values are colours
    in [-1, 1]. near / far: the scene's depth range along each ray (Blender-synthetic: 2 and 6)."""

    signal_dim = 3
    num_levels = None

    def __init__(self, source, near: float = 2.0, far: float = 6.0):
        self.source = source
        train = source.splits()["train"]
        self.domain = Rays(shape=train.images.shape[1:3], focal=train.focal, near=near, far=far)

    def to_values(self, images: np.ndarray) -> np.ndarray:
        """(M, H, W, 3) colours in [0, 1] -> (M, H * W, 3) float32 in [-1, 1]."""
        images = np.asarray(images, dtype=np.float32)
        return images.reshape(len(images), -1, 3) * 2 - 1

    def to_raw(self, values) -> np.ndarray:
        """(M, H * W, 3) values in [-1, 1] -> (M, H, W, 3) uint8 images."""
        values = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32)
        images = np.rint((values.clip(-1, 1) + 1) * 127.5).astype(np.uint8)
        return images.reshape(len(values), *self.domain.shape, 3)

    def views(self, split: str, ids: Optional[Sequence[int]] = None):
        """The split's Views (all of them, or those of `ids`)."""
        views = self.source.splits()[split]
        if ids is None:
            return views
        ids = list(ids)
        return type(views)(views.images[ids], views.alpha[ids], views.poses[ids], views.camera_angle_x,
                           [views.names[i] for i in ids])


def check_view_ids(ids: Optional[Sequence[int]], num_views: int, where: str) -> Optional[list[int]]:
    """`ids` as a list of distinct view indices in range(num_views), or a ValueError naming the offending ones."""
    if ids is None:
        return None
    ids = list(ids)
    if not ids or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"data.train_views lists view indices (ints) of {where}, got {ids}; null trains on all")
    unknown = sorted(i for i in ids if not 0 <= i < num_views)
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if unknown:
        raise ValueError(f"data.train_views {unknown} are no views of {where}, which has {num_views} "
                         f"(indices 0..{num_views - 1})")
    if duplicates:
        raise ValueError(f"data.train_views repeats view {duplicates}; list each training view once")
    return [int(i) for i in ids]


class ViewDataset(Dataset):
    """Whole views of one split: item i is (rays (H * W, 6), colours (H * W, 3) in [-1, 1])."""

    def __init__(self, rays: torch.Tensor, values: torch.Tensor, names: list[str]):
        self.rays, self.values, self.names = rays, values, names

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rays[i], self.values[i]


class SceneDataModule(FieldDataModule):
    """Train / val / test views of one scene; `train_views` picks the training views by index into the train split
    (None: all; e.g. OFFICIAL_8_VIEWS). `batch_size` is the number of views per step (global). Metrics are labelled
    `<name>-<scene>` (the config's `data.scene`, which sweeps over scenes: data.scene=lego,chair)."""

    def __init__(self, field_maker: PosedViews, scene: str, name: str = "scene",
                 train_views: Optional[Sequence[int]] = None, batch_size: int = 1, num_workers: int = 0,
                 seed: int = 0, pin_memory: bool = False):
        super().__init__(field_maker, name=f"{name}-{scene}", batch_size=batch_size, num_workers=num_workers,
                         seed=seed, pin_memory=pin_memory)
        num_train = len(field_maker.views("train").names)
        self.train_views = check_view_ids(train_views, num_train, f"the train split of {field_maker.source.root}")

    def split_views(self, split: str):
        return self.field_maker.views(split, self.train_views if split == "train" else None)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        for split in ("train", "val", "test"):
            views = self.split_views(split)
            rays = rays_from_poses(torch.from_numpy(views.poses), self.domain)
            values = torch.from_numpy(self.field_maker.to_values(views.images))
            self.datasets[split] = ViewDataset(rays, values, views.names)

    def view_names(self, split: str) -> list[str]:
        """Each view's image name (as its transforms file writes it), in loader order."""
        return list(self.split_views(split).names)

    def train_images(self) -> torch.Tensor:
        """(V, H, W, 3) colours in [0, 1] of the training views."""
        return torch.from_numpy(self.split_views("train").images)

    def _collate(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> FieldBatch:
        rays, values = zip(*items)
        return FieldBatch(coords=torch.stack(rays), values=torch.stack(values), domain=self.domain)
