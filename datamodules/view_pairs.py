"""Pairs of views of procedural scenes (the encoder family, which holds out the evaluation scene), for training the
view-invariant encoder contrastively: two views of one scene are positives, other scenes' views negatives.

A batch is a FieldBatch of `batch_size` images on a Grid: the first half are one view of each of batch_size / 2
scenes, the second half another view of the same scenes, in the same order. With hard negatives, every scene comes
with a copy that keeps its colour composition but not its layout (recoloured and/or moved primitives), as one more
scene of the batch right after it: the encoder must then tell scenes apart by more than their colours. The
"floaters" kind keeps the scene and pastes soft blobs of its colours onto the copy's views instead, as the
near-camera floaters of a NeRF fit to few views: the encoder must then tell a clean view from a cluttered one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.cameras import HemispherePoses
from datamodules.datamodule import FieldDataModule
from datamodules.fields import FieldBatch, Grid
from datamodules.sources.procedural_scenes import (CAMERA_ANGLE_X, HARD_NEGATIVE_KINDS, Primitive,
                                                   hard_negative_scene, render, scene_spec)

IMAGE_NEGATIVE_KINDS = ("floaters",)


def paste_floaters(views: np.ndarray, primitives: list[Primitive], rng: np.random.Generator,
                   max_count: int = 3) -> np.ndarray:
    """Views (V, H, W, 3) in [0, 1], each with 1..max_count soft elliptic blobs (Gaussian alpha, peak 0.6-1, radii
    4-16% of the width) in the scene's colours, darkened as shading would: what floaters look like in a render."""
    count, height, width = len(views), views.shape[1], views.shape[2]
    shape = (count, max_count)
    present = np.arange(max_count) < rng.integers(1, max_count + 1, count)[:, None]
    centres = rng.uniform(0, 1, (*shape, 2)) * [height, width]
    radii = rng.uniform(0.04, 0.16, (*shape, 2)) * width
    peak = rng.uniform(0.6, 1.0, shape) * present
    palette = np.array([p.colour for p in primitives])
    colours = palette[rng.integers(len(palette), size=shape)] * rng.uniform(0.5, 1.0, (*shape, 1))
    rows, cols = np.arange(height) + 0.5, np.arange(width) + 0.5
    d2 = (((rows[None, None, :, None] - centres[..., None, None, 0]) / radii[..., None, None, 0]) ** 2
          + ((cols[None, None, None, :] - centres[..., None, None, 1]) / radii[..., None, None, 1]) ** 2)
    alpha = peak[..., None, None] * np.exp(-d2)  # (V, K, H, W)
    out = views.copy()
    for k in range(max_count):  # "over" compositing, one blob layer at a time
        a = alpha[:, k, :, :, None]
        out = out * (1 - a) + colours[:, k, None, None, :] * a
    return out.astype(views.dtype)


class EncoderScenes:
    """The encoder scenes ("encoder", i): i in [0, num_train) for training, the next num_val and num_test for
    validation and test. `render_item` draws two cameras of DietNeRF's pose law and renders them on white
    (samples_per_axis^2 rays per pixel); training pairs are new views at every draw, val / test pairs fixed.
    hard_negatives: kinds of procedural_scenes.hard_negative_scene (recolour, move) and/or "floaters"
    (paste_floaters); when given, an item is also two views of that copy of the scene, redrawn at every draw in
    training, fixed in val / test."""

    channels = 3
    num_levels = None

    def __init__(self, num_train: int = 256, num_val: int = 32, num_test: int = 32, size: int = 64,
                 samples_per_axis: int = 1, hard_negatives: Sequence[str] = ()):
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.size, self.samples_per_axis = size, samples_per_axis
        self.focal = 0.5 * size / np.tan(0.5 * CAMERA_ANGLE_X)
        self.hard_negatives = tuple(hard_negatives)
        unknown = set(self.hard_negatives) - set(HARD_NEGATIVE_KINDS) - set(IMAGE_NEGATIVE_KINDS)
        if unknown:
            raise ValueError(f"data.field_maker.source.hard_negatives: unknown kinds {sorted(unknown)}; choose from "
                             f"{[*HARD_NEGATIVE_KINDS, *IMAGE_NEGATIVE_KINDS]}")
        self.scene_negatives = tuple(k for k in self.hard_negatives if k in HARD_NEGATIVE_KINDS)
        self.item_shape = (4 if self.hard_negatives else 2, size, size, 3)
        self.poses = HemispherePoses()

    def splits(self) -> dict[str, range]:
        starts = np.cumsum([0, *self.counts.values()])
        return {split: range(int(first), int(first) + count)
                for split, first, count in zip(self.counts, starts, self.counts.values())}

    def render_item(self, index: int, generator: Optional[torch.Generator] = None) -> np.ndarray:
        """item_shape float32 colours in [0, 1]: two views of scene ("encoder", index), then two of its hard
        negative when asked."""
        scenes = [scene_spec("encoder", index)]
        if self.hard_negatives:
            rng = np.random.default_rng(int(torch.randint(2**31, (), generator=generator)))
            scenes.append(hard_negative_scene(scenes[0], self.scene_negatives, rng) if self.scene_negatives
                          else scenes[0])
        views = []
        for scene in scenes:
            poses = self.poses.sample(2, generator).numpy()
            rgba, _ = render(scene, poses, self.size, self.size, self.focal, self.samples_per_axis)
            views.append(rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:])
        if "floaters" in self.hard_negatives:
            views[1] = paste_floaters(views[1], scenes[1], rng)
        return np.concatenate(views).astype(np.float32)


class SceneViewPairs:
    """The encoder scenes as fields: images on a Grid of their size, colours in [-1, 1]."""

    signal_dim = 3
    num_levels = None

    def __init__(self, source: EncoderScenes):
        self.source = source
        self.domain = Grid((source.size, source.size))


class PairDataset(Dataset):
    """Item i: the source's item for the split's i-th scene; `fixed`: the same views at every read."""

    def __init__(self, source: EncoderScenes, scenes: range, fixed: bool):
        self.source, self.scenes, self.fixed = source, scenes, fixed

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.scenes[i]) if self.fixed else None
        return torch.from_numpy(self.source.render_item(self.scenes[i], generator))


class ViewPairsDataModule(FieldDataModule):
    """Loaders of view pairs; `batch_size` counts images (two per scene, four with hard negatives)."""

    def __init__(self, field_maker: SceneViewPairs, name: str = "procedural-encoder-scenes", batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, pin_memory: bool = False):
        views = field_maker.source.item_shape[0]
        if batch_size % views:
            raise ValueError(f"data.batch_size={batch_size} counts images, {views} per scene item (two views, and "
                             f"two of its hard negative when asked): make it a multiple of {views}")
        super().__init__(field_maker, name=name, batch_size=batch_size // views, num_workers=num_workers, seed=seed,
                         pin_memory=pin_memory)

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.datasets:
            self.datasets = {split: PairDataset(self.field_maker.source, scenes, fixed=split != "train")
                             for split, scenes in self.field_maker.source.splits().items()}

    def _collate(self, pairs: list[torch.Tensor]) -> FieldBatch:
        pairs = torch.stack(pairs).flatten(0, 1).unflatten(0, (-1, 2))  # (B * items' scenes, 2, H, W, 3) in [0, 1]
        images = torch.cat([pairs[:, 0], pairs[:, 1]]).permute(0, 3, 1, 2) * 2 - 1
        return FieldBatch.from_dense(images, self.domain)
