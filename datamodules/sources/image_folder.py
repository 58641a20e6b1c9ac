"""Any folder of images (CelebA-HQ, FFHQ, LSUN Church, AFHQ): lazy, centre-cropped to a square, resized, RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from datamodules.sources.errors import DatasetNotFoundError
from datamodules.sources.files import FileSequence, list_files, split_dirs
from datamodules.sources.imaging import center_crop_square, resample_filter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
ORIGINS = ("CelebA-HQ: github.com/tkarras/progressive_growing_of_gans; FFHQ: github.com/NVlabs/ffhq-dataset; "
           "LSUN Church: github.com/fyu/lsun (export the lmdb to images); AFHQ: github.com/clovaai/stargan-v2")


class ImageFolder:
    """Every image under `root` (recursive). Splits: root/{train,val,test} when root/train exists (AFHQ's
    layout), else {"all"}. Items: (resolution, resolution, 3) uint8, read on indexing."""

    channels = 3
    num_levels = 256

    def __init__(self, root: str | Path, resolution: int, resample: str = "lanczos"):
        self.root, self.resolution = Path(root).expanduser(), int(resolution)
        self.resample = resample_filter(resample)
        files = {name: list_files(d, IMAGE_SUFFIXES) for name, d in split_dirs(self.root).items()} \
            if self.root.is_dir() else {}
        if not any(files.values()):
            raise DatasetNotFoundError(
                f"image folder {self.root}", [self.root], origin=ORIGINS,
                layout=f"image files ({', '.join(IMAGE_SUFFIXES)}) anywhere under the folder; optional "
                       "train/ val/ test/ subfolders become the splits")
        self._splits = {name: FileSequence(paths, self.load) for name, paths in files.items() if paths}

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return (self.resolution, self.resolution, 3)

    def load(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                image = center_crop_square(image.convert("RGB"))
                return np.asarray(image.resize((self.resolution,) * 2, self.resample))
        except (UnidentifiedImageError, OSError, SyntaxError) as error:  # PIL reports truncated files as OSError
            raise ValueError(f"{path}: not a readable image ({error}); remove or replace the file") from error

    def splits(self) -> dict[str, FileSequence]:
        return dict(self._splits)
