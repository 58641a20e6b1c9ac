"""The error every reader raises when its dataset is not on disk: what to put where, and where to get it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is absent. The message lists the searched paths, the expected layout and the origin."""

    def __init__(self, dataset: str, searched: Iterable[Path | str], layout: str, origin: str,
                 data_root: Optional[Path | str] = None):
        self.dataset, self.searched = dataset, [str(p) for p in searched]
        root = f"the data root {data_root}" if data_root is not None else "the data root"
        super().__init__(
            f"{dataset} not found; searched: {', '.join(self.searched) or '(nothing)'}.\n"
            f"Expected layout: {layout}\n"
            f"Get it from: {origin}\n"
            f"Put it under {root} (the config's paths.data_dir: set it with paths.data_dir=DIR or the "
            "FIELDGEN_DATA_DIR environment variable; default ./data), or pass its folder to the source "
            "(data.field_maker.source.data_dir / root)."
        )
