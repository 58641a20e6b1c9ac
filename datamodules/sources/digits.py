"""scikit-learn's bundled 8x8 digits (1797 images, grey levels 0..16): the embedded offline default."""
from __future__ import annotations

from functools import cached_property

import numpy as np


class Digits:
    """All 1797 digits as one split {"all": (1797, 8, 8, 1) uint8 in 0..16}; labels 0..9."""

    channels = 1
    num_levels = 17
    item_shape = (8, 8, 1)

    @cached_property
    def _bunch(self):
        from sklearn.datasets import load_digits  # imported on use: sklearn costs a second at import

        return load_digits()

    def splits(self) -> dict[str, np.ndarray]:
        return {"all": self._bunch.images.astype(np.uint8)[..., None]}

    def labels(self) -> dict[str, np.ndarray]:
        return {"all": self._bunch.target.astype(np.int64)}
