"""Checkpoints that would run code if a loader unpickled them (for the weights_only tests)."""
import torch


class CreatesAFile:
    """Unpickling this runs open(path, "w"): the file appears only if a loader executed the checkpoint's code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def write_payload_checkpoint(path, marker):
    """A checkpoint shaped like fieldgen's, with a code-running object among its entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fieldgen_method": "lightning_modules.ddpm.DDPM", "hyper_parameters": {}, "state_dict": {},
                "global_step": 1, "payload": CreatesAFile(marker)}, path)
    return path
