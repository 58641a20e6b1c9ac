"""What a run needs around the Trainer: config resolvers, the config tree, W&B mode, callbacks and loggers."""
from __future__ import annotations

import hashlib
import logging
import netrc
import os
import re
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run_dir_name(run_name: Optional[str], override_dirname: str) -> str:
    """A run directory named by `run_name`, else by the command's overrides: the same command, the same directory."""
    name = str(run_name or override_dirname or "default").replace("=", "-").replace(",", "__")
    # only characters that Hydra's override grammar takes unquoted, so the path can be passed back as ckpt_path=
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)[:200]


def sweep_dir_name(run_name: Optional[str], task_overrides: list[str], exclude_keys: list[str]) -> str:
    """A sweep directory named by `run_name`, else by the command's overrides with their sweep values
    (`seed=1,2,3`): the same command, the same sweep directory, so a rerun resumes every job."""
    if run_name:
        return run_dir_name(run_name, "")
    kept = sorted(item for item in task_overrides if item.split("=", 1)[0].lstrip("+~") not in set(exclude_keys))
    return run_dir_name(None, "__".join(item.replace(",", "+") for item in kept))


def launch_dir() -> str:
    """The directory the command was started in: Hydra's runtime.cwd inside a job, the process's own before Hydra
    has set its config (a multirun resolves the sweep directory then)."""
    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


def stable_id(text: str) -> str:
    """A short id derived from a path: a requeued run logs to the same W&B run."""
    return hashlib.sha1(str(text).encode()).hexdigest()[:12]


def register_resolvers() -> None:
    for name, fn in {"run_dir_name": run_dir_name, "stable_id": stable_id, "launch_dir": launch_dir}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    if not OmegaConf.has_resolver("sweep_dir_name"):
        # cached: each sweep job's config is recomposed with its own overrides, and Hydra copies the launching
        # config's resolver cache into it, so every job reads the name computed from the whole command
        OmegaConf.register_new_resolver("sweep_dir_name", sweep_dir_name, use_cache=True)


def resolve_device(name: str) -> "torch.device":
    """`auto` picks the GPU when there is one."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def wandb_needs_offline() -> bool:
    """No API key anywhere: W&B would raise at start, so the run logs offline (`wandb sync` uploads later)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


@rank_zero_only
def print_config_tree(cfg: DictConfig, save_to: Optional[Path] = None) -> None:
    """The composed config as a rich tree, top-level groups first; also written to `save_to`."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key), style="bold").add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        with open(save_to, "w") as f:
            rich.print(tree, file=f)


def instantiate_plainly(cfg: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, re-raising our own clear errors (bad data, wrong domain) as they are rather than
    wrapped in Hydra's InstantiationException."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, FileNotFoundError)):
            raise err.__cause__ from None
        raise


def instantiate_callbacks(cfg: Optional[DictConfig]) -> list[Callback]:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def instantiate_loggers(cfg: Optional[DictConfig]) -> list[Logger]:
    loggers = []
    for name, conf in (cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        if "wandb" in name and wandb_needs_offline():
            log.warning("no W&B API key found: logging offline to %s (upload with `wandb sync`)",
                        conf.get("save_dir"))
            os.environ["WANDB_MODE"] = "offline"
        loggers.append(instantiate(conf))
    return loggers
