"""What a run needs around the Trainer: config resolvers, command-line checks and error reports, the config tree,
W&B mode, callbacks and loggers."""
from __future__ import annotations

import functools
import hashlib
import logging
import netrc
import os
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
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


class UsageError(ValueError):
    """A command-line value that cannot work (missing, a word for a number, a device the machine lacks): refused
    before any work, naming the fix."""


def require(cfg: DictConfig, usage: str, *keys: str) -> None:
    """Refuse a command that leaves any of the top-level `keys` unset (`???`), showing `usage`."""
    missing = [key for key in keys if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise UsageError(f"missing {' '.join(key + '=...' for key in missing)}; usage: {usage}")


def check_counts(cfg: DictConfig, minimums: dict[str, int]) -> None:
    """Refuse a count (dotted key) that is not a whole number >= its minimum: num_samples=0, batch_size=abc."""
    for key, minimum in minimums.items():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            meaning = " (-1: no limit)" if minimum == -1 else ""
            raise UsageError(f"{key}={value}: must be a whole number >= {minimum}{meaning}")


def resolve_device(name: str) -> "torch.device":
    """`auto` picks the GPU when there is one; a device this machine lacks is refused."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device={name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name}, but torch finds no CUDA GPU on this machine; use device=cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device={name}, but this machine has {torch.cuda.device_count()} CUDA GPU(s); use "
                         f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def reports_errors(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """A Hydra task whose error ends the command as the last line on the terminal (`Error: ...`), its traceback
    kept in the run's log file; with HYDRA_FULL_ERROR=1, and in a multirun job, it is raised as Hydra does."""

    @functools.wraps(task)
    def run(cfg: DictConfig):
        try:
            return task(cfg)
        except Exception as err:
            files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
            record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "stopped by %s", (type(err).__name__,),
                                    sys.exc_info())
            for handler in files:
                handler.handle(record)
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            if files:
                print(f"(full traceback in {files[0].baseFilename})", file=sys.stderr)
            print(f"Error: {err}", file=sys.stderr)
            raise SystemExit(1) from None

    return run


def unreachable(host: str, port: int, timeout: float) -> Optional[str]:
    """Why a TCP connection to host:port cannot be made within `timeout` seconds (name lookup included), or None."""
    outcome: list[Optional[str]] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(str(err) or type(err).__name__)

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"


def wandb_offline_reason(timeout: float = 5.0) -> Optional[str]:
    """Why W&B cannot log online (no API key, or its server unreachable: W&B would hang ~2 minutes, then raise), or
    None when it can or WANDB_MODE says what to do."""
    if os.environ.get("WANDB_MODE"):
        return None
    server = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    if not os.environ.get("WANDB_API_KEY"):
        try:
            if netrc.netrc(os.environ.get("NETRC")).authenticators(server.hostname) is None:
                return "no W&B API key found"
        except (FileNotFoundError, netrc.NetrcParseError):
            return "no W&B API key found"
    port = server.port or (443 if server.scheme == "https" else 80)
    why = unreachable(server.hostname, port, timeout)
    return None if why is None else f"the W&B server {server.hostname}:{port} is unreachable ({why})"


@rank_zero_only
def save_config_tree(cfg: DictConfig, path: Path) -> None:
    """The composed config as a rich tree, top-level groups first, written to `path`; the terminal gets a short
    header (the groups chosen, the run dir), so an error stays the last thing on the screen."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key), style="bold").add(rich.syntax.Syntax(text, "yaml"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        rich.print(tree, file=f)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    chosen = ", ".join(f"{group}={choices[group]}" for group in ("experiment", "method", "data", "trainer", "debug")
                       if choices.get(group) not in (None, "null"))
    log.info("%s; run dir %s (config tree: %s)", chosen or "default config", path.parent, path.name)


@rank_zero_only
def log_run_outputs(trainer) -> None:
    """Where a finished run's checkpoint, samples, metrics and loss curve are: the last lines of its output."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from lightning_modules.callbacks.loss_curve import LossCurve
    from lightning_modules.callbacks.sample_grid import SampleGrid

    places = {"checkpoint": getattr(trainer.checkpoint_callback, "last_model_path", None)}
    for callback in trainer.callbacks:
        if isinstance(callback, SampleGrid):
            places["samples"] = callback.dirpath / "latest.png"
        if isinstance(callback, LossCurve):
            places["loss curve"] = callback.path
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            places["metrics"] = Path(logger.log_dir) / "metrics.csv"
        if isinstance(logger, WandbLogger):
            places["W&B run"] = Path(logger.experiment.dir).parent
    for what, path in places.items():
        if path and Path(path).exists():
            log.info("%-10s %s", what, path)


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
        reason = wandb_offline_reason() if "wandb" in name else None
        if reason is not None:
            log.warning("%s: logging offline to %s (upload later with `wandb sync`)", reason, conf.get("save_dir"))
            os.environ["WANDB_MODE"] = "offline"
        loggers.append(instantiate(conf))
    return loggers
