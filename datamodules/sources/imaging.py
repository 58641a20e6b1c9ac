"""PIL helpers shared by image readers and makers: centre-crop to a square, resize, batch resize."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}


def resample_filter(name: str) -> Image.Resampling:
    if name not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {name!r}")
    return RESAMPLE[name]


def center_crop_square(image: Image.Image) -> Image.Image:
    """The largest centred square of `image`."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resize_images(images: np.ndarray, size: Sequence[int], resample: str = "lanczos") -> np.ndarray:
    """(M, H, W, C) uint8 -> (M, h, w, C) uint8 with PIL (one call per image; there is no batched PIL resize)."""
    height, width = size
    if images.shape[1:3] == (height, width):
        return images
    mode = resample_filter(resample)
    channels = images.shape[-1]
    resized = [np.asarray(Image.fromarray(image[..., 0] if channels == 1 else image).resize((width, height), mode))
               for image in images]
    return np.stack(resized).reshape(len(images), height, width, channels)
