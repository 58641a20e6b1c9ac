"""The error every reader raises when its dataset is not on disk: what to put where, and where to get it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is absent. The message lists the searched paths, the expected layout and the origin."""

    def __init__(self, dataset: str, searched: Iterable[Path | str], layout: str, origin: str):
        self.dataset, self.searched = dataset, [str(p) for p in searched]
        super().__init__(
            f"{dataset} not found; searched: {', '.join(self.searched) or '(nothing)'}.\n"
            f"Expected layout: {layout}\n"
            f"Get it from: {origin}\n"
            "Pass the folder as the source's data_dir/root argument, or put it under $FIELDGEN_DATA_DIR "
            "(default ./data)."
        )
