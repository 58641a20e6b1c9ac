"""The NeRF Blender-synthetic scene format: <scene>/transforms_{train,val,test}.json and RGBA PNGs.

A transforms file holds `camera_angle_x` (horizontal field of view, radians) and `frames`, each with `file_path`
(relative to the scene folder, without `.png`) and `transform_matrix` (4x4 camera-to-world, datamodules/cameras.py
conventions). As the official loader: half resolution averages 2x2 blocks of the straight RGBA (cv2 INTER_AREA at
a factor of 2), then the colour is composited over white with its alpha; val and test keep every `test_skip`-th
frame. focal = W / 2 / tan(camera_angle_x / 2) at the loaded width.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from datamodules.cameras import check_rigid
from datamodules.sources.files import find_data_dir

SPLITS = ("train", "val", "test")
ORIGIN = ("the NeRF synthetic scenes (nerf_synthetic.zip of the NeRF release, https://github.com/bmild/nerf), or the "
          "project's own procedural scenes (data=procedural_scene, written on first use)")


@dataclass
class Views:
    """One split of a scene: images (V, H, W, 3) float32 in [0, 1] (composited when the scene asked for it),
    alpha (V, H, W) float32, camera-to-world poses (V, 4, 4) float32, the horizontal field of view and each view's
    image name (its file name without `.png`, as written in the transforms file)."""

    images: np.ndarray
    alpha: np.ndarray
    poses: np.ndarray
    camera_angle_x: float
    names: list[str]

    @property
    def focal(self) -> float:
        return 0.5 * self.images.shape[2] / math.tan(0.5 * self.camera_angle_x)


def read_rgba(path: Path, white_background: bool) -> np.ndarray:
    """An 8-bit PNG as float32 (H, W, 4) in [0, 1]; alpha 1 for RGB images unless a white background needs alpha."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: its transforms file lists it as a frame")
    with Image.open(path) as image:
        if image.mode not in ("RGBA", "RGB", "L", "LA", "P"):
            raise ValueError(f"{path} is a {image.mode} image; the Blender-synthetic format is 8-bit RGBA PNG "
                             "(convert 16-bit images to 8 bits)")
        if white_background and image.mode not in ("RGBA", "LA") and "transparency" not in image.info:
            raise ValueError(f"{path} has no alpha channel, but white_background composites colour over white by "
                             "alpha; supply RGBA images or set data.field_maker.source.white_background=false")
        return np.asarray(image.convert("RGBA"), dtype=np.float32) / 255


def half_resolution(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) -> (H // 2, W // 2, 4), the mean of each 2x2 block (cv2 INTER_AREA at a factor of 2)."""
    height, width = rgba.shape[0] // 2 * 2, rgba.shape[1] // 2 * 2
    return rgba[:height, :width].reshape(height // 2, 2, width // 2, 2, 4).mean(axis=(1, 3))


def read_split(scene_dir: Path, split: str, half_res: bool, white_background: bool, skip: int) -> Views:
    path = scene_dir / f"transforms_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a Blender-synthetic scene has transforms_train.json, "
                                "transforms_val.json and transforms_test.json")
    meta = json.loads(path.read_text())
    for key in ("camera_angle_x", "frames"):
        if key not in meta:
            raise ValueError(f"{path} has no '{key}': the Blender-synthetic format needs camera_angle_x (the "
                             "horizontal field of view in radians) and frames")
    frames = meta["frames"][::skip]
    if not frames:
        raise ValueError(f"{path} lists no frames")
    images, poses, names = [], [], []
    for i, frame in enumerate(frames):
        where = f"{path} frame {i * skip}"
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise ValueError(f"{where} needs file_path and transform_matrix")
        poses.append(check_rigid(frame["transform_matrix"], where).numpy())
        image_path = (scene_dir / frame["file_path"]).with_suffix(".png")
        rgba = read_rgba(image_path, white_background)
        if images and rgba.shape != images[0].shape:
            raise ValueError(f"{image_path} is {rgba.shape[1]}x{rgba.shape[0]} but {names[0]} of the same split is "
                             f"{images[0].shape[1]}x{images[0].shape[0]}; every view of a split has one size")
        images.append(rgba)
        names.append(image_path.stem)
    rgba = np.stack(images)
    if half_res:
        rgba = np.stack([half_resolution(image) for image in rgba])
    colour, alpha = rgba[..., :3], rgba[..., 3]
    if white_background:
        colour = colour * alpha[..., None] + (1 - alpha[..., None])
    return Views(colour.astype(np.float32), alpha.astype(np.float32), np.stack(poses).astype(np.float32),
                 float(meta["camera_angle_x"]), names)


class BlenderScene:
    """One scene in the Blender-synthetic format, found as <data_root>/<dataset_dir>/<scene> (or `data_dir`).

    half_res: the official 400x400 of the 800x800 renders. test_skip: keep every test_skip-th val/test frame
    (official: 8, so 25 test views).
    """

    channels = 3
    num_levels = None  # composited colours are no longer 8-bit levels

    def __init__(self, scene: str, data_dir: Optional[str] = None, data_root: Optional[str] = None,
                 dataset_dir: str = "nerf_synthetic", half_res: bool = True, white_background: bool = True,
                 test_skip: int = 8):
        if test_skip < 1:
            raise ValueError(f"test_skip keeps every n-th val/test frame, n >= 1; got {test_skip}")
        self.root = find_data_dir(
            data_dir, [Path(dataset_dir) / scene], lambda d: any((d / f"transforms_{s}.json").is_file() for s in SPLITS),
            dataset=f"Blender-synthetic scene '{scene}'", data_root=data_root, origin=ORIGIN,
            layout=f"{dataset_dir}/{scene}/transforms_{{train,val,test}}.json with the PNGs their frames name")
        self.scene, self.half_res, self.white_background, self.test_skip = scene, half_res, white_background, test_skip
        self._splits: Optional[dict[str, Views]] = None

    def splits(self) -> dict[str, Views]:
        """Every split, read once; the views of all splits share one size and field of view."""
        if self._splits is None:
            splits = {split: read_split(self.root, split, self.half_res, self.white_background,
                                        1 if split == "train" else self.test_skip) for split in SPLITS}
            train = splits["train"]
            for split, views in splits.items():
                if views.images.shape[1:] != train.images.shape[1:] or \
                        not math.isclose(views.camera_angle_x, train.camera_angle_x, rel_tol=1e-6):
                    raise ValueError(
                        f"{self.root}: {split} views are {views.images.shape[2]}x{views.images.shape[1]} with "
                        f"camera_angle_x {views.camera_angle_x}, train views {train.images.shape[2]}x"
                        f"{train.images.shape[1]} with {train.camera_angle_x}; a scene has one camera")
            self._splits = splits
        return self._splits

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.splits()["train"].images.shape[1:]
