"""Checkpoints that are never half-written, automatic resume, config checks, and loading a method for sampling."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.utils import get_class
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_modules.base import FieldModule, as_container


class ConfigMismatchError(ValueError):
    """A checkpoint was written by a run whose model configuration differs from this one."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<path>.tmp` beside the target, fsyncs, then renames over it: a kill leaves the old file whole.

    Lightning's own save stages the file in /tmp and falls back to a non-atomic copy when /tmp is another
    filesystem (the usual case on clusters), so it is not enough for a run directory on shared storage.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the atomic primitive there
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def find_resume_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The run directory's `checkpoints/last.ckpt`, when a previous (killed or requeued) run left one."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); "
                         "it may be truncated or from another program") from err


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def check_config_matches(checkpoint: dict[str, Any], module: FieldModule, path: str | Path) -> None:
    """Refuse a checkpoint whose method or shape-deciding hyper-parameters differ from `module`'s."""
    saved = checkpoint.get("hyper_parameters")
    saved_class = checkpoint.get("fieldgen_method")
    this_class = f"{type(module).__module__}.{type(module).__qualname__}"
    if saved is None or saved_class is None:
        raise ConfigMismatchError(f"{path} was not written by fieldgen (no method or hyper-parameters inside)")
    if saved_class != this_class:
        raise ConfigMismatchError(f"{path} holds a {saved_class} model, but this run builds {this_class}; "
                                  "use that method's experiment, or a fresh run_name to start over")
    differences = []
    for key in module.structural_hparams:
        ours = _flatten(as_container(module.hparams.get(key)), f"{key}.")
        theirs = _flatten(as_container(saved.get(key)), f"{key}.")
        for name in sorted(set(ours) | set(theirs)):
            if ours.get(name) != theirs.get(name):
                differences.append(f"  {name}: checkpoint {theirs.get(name)!r}, this run {ours.get(name)!r}")
    if differences:
        raise ConfigMismatchError(
            f"{path} was trained with a different model configuration:\n" + "\n".join(differences) +
            "\nRun with the checkpoint's settings, or start a fresh run (another run_name, or resume=false).")


def load_method(path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu"
                ) -> FieldModule:
    """Rebuild the method a checkpoint was trained as, with its EMA weights (or the raw ones), in eval mode."""
    checkpoint = read_checkpoint(path)
    if "fieldgen_method" not in checkpoint:
        raise ConfigMismatchError(f"{path} was not written by fieldgen (no method class inside)")
    cls = get_class(checkpoint["fieldgen_method"])
    module = cls(**checkpoint["hyper_parameters"])
    # EMAWeightAveraging stores the EMA weights as state_dict and the raw ones as current_model_state
    weights = checkpoint["state_dict"] if use_ema else checkpoint.get("current_model_state", checkpoint["state_dict"])
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigMismatchError(f"{path}: its weights do not fit the {cls.__name__} its own config builds "
                                  f"(a corrupt or hand-edited checkpoint?): {err}") from err
    module.run_config = checkpoint.get("fieldgen_config")
    return module.to(map_location).eval()
