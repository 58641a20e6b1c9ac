"""A callback for the DDP test: what each rank trained on, gathered to rank 0 and written as JSON."""
import hashlib
import json
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class RankProbe(Callback):
    """Per rank: its seed after setup, and per training step the batch size, one digest per field, a digest of
    the global RNG state (the t and noise draws come from it) and, after the step, of all parameters."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.record: dict = {}

    def on_train_start(self, trainer, pl_module):
        self.record = {"rank": trainer.global_rank, "initial_seed": torch.initial_seed(), "steps": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.record["steps"].append({"step": trainer.global_step, "batch_size": batch.batch_size,
                                     "fields": [digest(values) for values in batch.values],
                                     "rng": digest(torch.get_rng_state())})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.record["steps"][-1]["weights"] = digest(torch.cat([p.flatten() for p in pl_module.parameters()]))

    def on_train_end(self, trainer, pl_module):
        gathered = [None] * trainer.world_size
        dist.all_gather_object(gathered, self.record)
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(gathered))
