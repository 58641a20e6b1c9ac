"""Checkpoints that are never half-written, automatic resume, config checks, and loading a method for sampling."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.utils import get_class
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_modules.base import FieldModule, as_container


class ConfigMismatchError(ValueError):
    """A checkpoint was written by a run whose model configuration differs from this one."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds objects beyond tensors and plain containers: loading it could run code inside it."""


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

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None
                        ) -> dict[str, Any]:
        """Lightning's resume reads through here: always as tensors and plain containers (read_checkpoint)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return read_checkpoint(path)


class RunDirectoryInUseError(ValueError):
    """A fresh start (resume=false) was asked for in a run directory that already holds a run's checkpoints."""


def refuse_fresh_start_over(output_dir: str | Path) -> None:
    """resume=false in a run directory holding checkpoints would write beside them (last-v1.ckpt), and the next
    plain rerun would resume the old run: refuse, naming the way to a new directory."""
    found = sorted((Path(output_dir) / "checkpoints").glob("*.ckpt"))
    if found:
        raise RunDirectoryInUseError(
            f"resume=false, but the run directory {output_dir} already holds {len(found)} checkpoint(s) "
            f"({', '.join(p.name for p in found[:3])}); a fresh start there would be mixed up with the old run. "
            "Give the new run its own directory with run_name=<new name>, or drop resume=false to continue it.")


def remove_partial_checkpoints(checkpoint_dir: str | Path, resumed: Optional[dict[str, Any]]) -> list[Path]:
    """Delete what a killed run left in its checkpoint dir: `*.tmp` files (half-written by AtomicCheckpointIO) and,
    when resuming its last.ckpt (`resumed`), the `step_*.ckpt` files that its ModelCheckpoint no longer tracks
    (the kill came before it deleted them)."""
    checkpoint_dir = Path(checkpoint_dir)
    if resumed is None:
        return [path for path in checkpoint_dir.glob("*.tmp") if path.unlink(missing_ok=True) is None]
    tracked = set()
    for state in resumed.get("callbacks", {}).values():
        if isinstance(state, dict) and "best_k_models" in state:
            tracked |= {Path(p).name for p in [*state["best_k_models"], state.get("best_model_path") or ""]}
    leftovers = [*checkpoint_dir.glob("*.tmp"),
                 *(p for p in checkpoint_dir.glob("step_*.ckpt") if p.name not in tracked)]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def find_resume_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The run directory's `checkpoints/last.ckpt`, when a previous (killed or requeued) run left one."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read as tensors and plain containers only (`weights_only=True`): fieldgen's own
    checkpoints hold nothing else, and a pickled object in a foreign one could run code when unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # what torch raises when weights_only meets anything else
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:  # not a pickled object at all: garbage or a truncated file
            raise ValueError(f"{path} is not a readable checkpoint (it may be truncated or from another "
                             "program)") from None
        raise UnsafeCheckpointError(
            f"{path} holds Python objects beyond tensors and plain containers ({found.group(1)}); it was not "
            "loaded, as unpickling it could run code. fieldgen's own checkpoints never do: use a checkpoint "
            "written by experiments/train.py") from None
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
    """Refuse a checkpoint whose method or shape-deciding hyper-parameters differ from `module`'s. A resolution-free
    method may continue at another field resolution (domain.shape: a coarse-to-fine phase), never another domain."""
    saved = checkpoint.get("hyper_parameters")
    saved_class = checkpoint.get("fieldgen_method")
    this_class = f"{type(module).__module__}.{type(module).__qualname__}"
    if saved is None or saved_class is None:
        raise ConfigMismatchError(f"{path} was not written by fieldgen (no method or hyper-parameters inside)")
    if saved_class != this_class:
        raise ConfigMismatchError(f"{path} holds a {saved_class} model, but this run builds {this_class}; "
                                  "use that method's experiment, or a fresh run_name to start over")
    differences = []
    free = {"domain.shape"} if module.capabilities.resolution_free else set()
    for key in module.structural_hparams:
        ours = _flatten(as_container(module.hparams.get(key)), f"{key}.")
        theirs = _flatten(as_container(saved.get(key)), f"{key}.")
        for name in sorted(set(ours) | set(theirs)):
            if ours.get(name) != theirs.get(name) and name not in free:
                differences.append(f"  {name}: checkpoint {theirs.get(name)!r}, this run {ours.get(name)!r}")
    if differences:
        raise ConfigMismatchError(
            f"{path} was trained with a different model configuration:\n" + "\n".join(differences) +
            "\nRun with the checkpoint's settings, or start a fresh run (another run_name, or resume=false).")


# settings that change how training continues, not the model: a resume applies the command's values
RESUME_SETTINGS = ("method.optimizer", "method.lr_warmup_steps", "method.lr_schedule", "trainer.gradient_clip_val",
                   "trainer.gradient_clip_algorithm", "trainer.accumulate_grad_batches")


def changed_resume_settings(checkpoint: dict[str, Any], run_config: dict[str, Any]) -> list[str]:
    """`key: checkpoint value -> this run's` for each RESUME_SETTINGS entry the command changed (they take effect)."""
    saved = checkpoint.get("fieldgen_config") or {}
    changes = []
    for setting in RESUME_SETTINGS:
        section, key = setting.split(".", 1)
        ours = _flatten((run_config.get(section) or {}).get(key), f"{setting}.")
        theirs = _flatten((saved.get(section) or {}).get(key), f"{setting}.")
        changes += [f"{name}: {theirs.get(name)!r} -> {ours.get(name)!r}" for name in sorted(set(ours) | set(theirs))
                    if ours.get(name) != theirs.get(name)]
    return changes


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
