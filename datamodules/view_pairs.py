"""Pairs of views of procedural scenes (the encoder family, which holds out the evaluation scene), for training the
view-invariant encoder contrastively: two views of one scene are positives, other scenes' views negatives.

A batch is a FieldBatch of `batch_size` images on a Grid: the first half are one view of each of batch_size / 2
scenes, the second half another view of the same scenes, in the same order.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.cameras import HemispherePoses
from datamodules.datamodule import FieldDataModule
from datamodules.fields import FieldBatch, Grid
from datamodules.sources.procedural_scenes import CAMERA_ANGLE_X, render, scene_spec


class EncoderScenes:
    """The encoder scenes ("encoder", i): i in [0, num_train) for training, the next num_val and num_test for
    validation and test. `render_pair` draws two cameras of DietNeRF's pose law and renders them on white
    (samples_per_axis^2 rays per pixel); training pairs are new views at every draw, val / test pairs fixed."""

    channels = 3
    num_levels = None

    def __init__(self, num_train: int = 256, num_val: int = 32, num_test: int = 32, size: int = 64,
                 samples_per_axis: int = 1):
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.size, self.samples_per_axis = size, samples_per_axis
        self.focal = 0.5 * size / np.tan(0.5 * CAMERA_ANGLE_X)
        self.item_shape = (2, size, size, 3)
        self.poses = HemispherePoses()

    def splits(self) -> dict[str, range]:
        starts = np.cumsum([0, *self.counts.values()])
        return {split: range(int(first), int(first) + count)
                for split, first, count in zip(self.counts, starts, self.counts.values())}

    def render_pair(self, index: int, generator: Optional[torch.Generator] = None) -> np.ndarray:
        """(2, H, W, 3) float32 colours in [0, 1] of two views of scene ("encoder", index)."""
        poses = self.poses.sample(2, generator).numpy()
        rgba, _ = render(scene_spec("encoder", index), poses, self.size, self.size, self.focal, self.samples_per_axis)
        return (rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]).astype(np.float32)


class SceneViewPairs:
    """The encoder scenes as fields: images on a Grid of their size, colours in [-1, 1]."""

    signal_dim = 3
    num_levels = None

    def __init__(self, source: EncoderScenes):
        self.source = source
        self.domain = Grid((source.size, source.size))


class PairDataset(Dataset):
    """Item i: two views (2, H, W, 3) of the split's i-th scene; `fixed`: the same two views at every read."""

    def __init__(self, source: EncoderScenes, scenes: range, fixed: bool):
        self.source, self.scenes, self.fixed = source, scenes, fixed

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.scenes[i]) if self.fixed else None
        return torch.from_numpy(self.source.render_pair(self.scenes[i], generator))


class ViewPairsDataModule(FieldDataModule):
    """Loaders of view pairs; `batch_size` counts images (two per scene), so it is even."""

    def __init__(self, field_maker: SceneViewPairs, name: str = "procedural-encoder-scenes", batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, pin_memory: bool = False):
        if batch_size % 2:
            raise ValueError(f"data.batch_size={batch_size} counts images, two views per scene: make it even")
        super().__init__(field_maker, name=name, batch_size=batch_size // 2, num_workers=num_workers, seed=seed,
                         pin_memory=pin_memory)

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.datasets:
            self.datasets = {split: PairDataset(self.field_maker.source, scenes, fixed=split != "train")
                             for split, scenes in self.field_maker.source.splits().items()}

    def _collate(self, pairs: list[torch.Tensor]) -> FieldBatch:
        pairs = torch.stack(pairs)  # (B, 2, H, W, 3) in [0, 1]
        images = torch.cat([pairs[:, 0], pairs[:, 1]]).permute(0, 3, 1, 2) * 2 - 1
        return FieldBatch.from_dense(images, self.domain)
