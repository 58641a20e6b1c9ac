"""Train a method: `python experiments/train.py experiment=ddpm_digits [trainer=gpu] [-m hydra/launcher=slurm_a100]`.

A run directory that already holds checkpoints/last.ckpt is resumed, so rerunning a killed command (or a SLURM
requeue) continues where it stopped.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from lightning_modules.build import build
from lightning_modules.checkpointing import (AtomicCheckpointIO, changed_resume_settings, check_config_matches,
                                             find_resume_checkpoint, read_checkpoint, refuse_fresh_start_over,
                                             remove_partial_checkpoints)
from lightning_modules.runtime import (check_counts, instantiate_callbacks, instantiate_loggers, log_run_outputs,
                                      register_resolvers, reports_errors, save_config_tree)

log = logging.getLogger("fieldgen.train")
register_resolvers()


def resume_path(cfg: DictConfig, model) -> Optional[str]:
    """The checkpoint to continue from, checked against the config: the run dir's own last.ckpt when it has one (a
    killed run that started from an explicit ckpt_path, e.g. a fine-tuning phase, continues itself), else ckpt_path."""
    if not cfg.resume:
        refuse_fresh_start_over(cfg.paths.output_dir)
    own = find_resume_checkpoint(cfg.paths.output_dir) if cfg.resume else None
    path = own or cfg.ckpt_path
    checkpoint = read_checkpoint(path) if path is not None else None
    if checkpoint is not None:
        check_config_matches(checkpoint, model, path)
    if rank_zero_only.rank == 0:
        checkpoint_dir = Path(cfg.paths.output_dir) / "checkpoints"
        for leftover in remove_partial_checkpoints(checkpoint_dir, checkpoint if path == own else None):
            log.info("removed %s, left by a run killed while saving a checkpoint", leftover)
    if path is None:
        return None
    log.info("resuming from %s (global step %d)", path, checkpoint.get("global_step", 0))
    for change in changed_resume_settings(checkpoint, model.run_config):
        log.info("changed on resume, takes effect now: %s", change)
    return str(path)


def train(cfg: DictConfig) -> dict[str, Any]:
    check_counts(cfg, {"trainer.max_steps": -1, "trainer.max_epochs": -1, "data.batch_size": 1, "seed": 0})
    save_config_tree(cfg, Path(cfg.paths.output_dir) / "config_tree.log")
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    ckpt_path = resume_path(cfg, model)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg.get("callbacks")),
                                     logger=instantiate_loggers(cfg.get("logger")) or False,
                                     plugins=[AtomicCheckpointIO()])
    for logger in trainer.loggers:
        logger.log_hyperparams(model.run_config)
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test:
        # after fit the model holds the EMA weights (the averaging callback copies them in at fit end); without
        # training, the checkpoint's state_dict (its EMA weights) is tested
        trainer.test(model, datamodule=datamodule, ckpt_path=None if cfg.train else ckpt_path)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    log_run_outputs(trainer)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@reports_errors
def main(cfg: DictConfig) -> Optional[float]:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
