"""Progress bar choice: rich on a terminal, plain TQDM where output goes to a file (SLURM logs, CI)."""
from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar


def progress_bar(file_refresh_rate: int = 50) -> ProgressBar:
    if sys.stdout.isatty():
        return RichProgressBar()
    return TQDMProgressBar(refresh_rate=file_refresh_rate)
