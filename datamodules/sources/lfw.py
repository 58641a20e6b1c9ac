"""scikit-image's bundled LFW subset: 100 grey face crops of 25x25 (plus 100 non-faces), offline faces."""
from __future__ import annotations

from functools import cached_property

import numpy as np


class LFWFaces:
    """{"all": (100, 25, 25, 1) uint8} faces (or all 200 crops with faces_only=False)."""

    channels = 1
    num_levels = 256
    item_shape = (25, 25, 1)

    def __init__(self, faces_only: bool = True):
        self.faces_only = faces_only

    @cached_property
    def _images(self) -> np.ndarray:
        from skimage.data import lfw_subset  # the first 100 crops are faces, the last 100 backgrounds
        from skimage.util import img_as_ubyte

        images = img_as_ubyte(lfw_subset())
        return (images[:100] if self.faces_only else images)[..., None]

    def splits(self) -> dict[str, np.ndarray]:
        return {"all": self._images}
