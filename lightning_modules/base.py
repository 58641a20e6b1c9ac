"""What every method shares: the domain check, optimiser with warm-up, per-sample loss logging, the finite-loss guard."""
from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from datamodules.fields import Domain, FieldBatch


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the step was not applied."""


class DomainNotSupportedError(ValueError):
    """A method was configured on a domain it cannot handle."""


def as_container(cfg: Any) -> Any:
    """Plain dicts/lists for hyper-parameters (checkpoints and W&B read them without omegaconf)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg


class FieldGenerativeModule(L.LightningModule):
    """Base LitModule of a generative method over fields.

    Subclasses set `method_name` and `supported_domains`, build their network in `__init__`, and implement
    `compute_losses(batch) -> dict` of per-sample (B,) losses with a "loss" key, and `sample(num_samples, ...)`.
    """

    method_name: str = "method"
    supported_domains: tuple[str, ...] = ()  # Domain.name values the method accepts
    # hyper-parameters that decide parameter shapes: a checkpoint must agree on these to be loaded
    structural_hparams: tuple[str, ...] = ("domain", "signal_dim", "net")

    def __init__(self, domain: dict | Domain, signal_dim: int, num_levels: Optional[int], optimizer: dict,
                 lr_warmup_steps: int = 0, compile: bool = False):
        super().__init__()
        self.domain: Domain = instantiate(domain) if isinstance(domain, (dict, DictConfig)) else domain
        self.check_domain(self.domain)
        self.signal_dim, self.num_levels = signal_dim, num_levels
        self.optimizer_cfg, self.lr_warmup_steps, self.compile_net = optimizer, lr_warmup_steps, compile
        self.run_config: Optional[dict] = None  # the composed run config, set by train.py, kept in checkpoints

    @classmethod
    def check_domain(cls, domain: Domain) -> None:
        if domain.name not in cls.supported_domains:
            from lightning_modules import methods_for_domain

            raise DomainNotSupportedError(
                f"method '{cls.method_name}' handles {list(cls.supported_domains)} domains, but the data is on a "
                f"'{domain.name}' domain; methods that accept '{domain.name}': {methods_for_domain(domain.name)}")

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            # seed_everything gives every rank the same stream: offset it so ranks draw different t and noise
            torch.manual_seed(torch.initial_seed() + self.global_rank)
        if self.compile_net:
            self.net.compile()  # compiles forward in place: state_dict keys stay the same

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fieldgen_method"] = f"{type(self).__module__}.{type(self).__qualname__}"
        # plain containers load under torch.load(weights_only=True), which Lightning uses when resuming
        checkpoint["hyper_parameters"] = {k: as_container(v) for k, v in checkpoint["hyper_parameters"].items()}
        if self.run_config is not None:
            checkpoint["fieldgen_config"] = self.run_config

    # ---- training -------------------------------------------------------------------------------------------------
    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False) -> FieldBatch:
        raise NotImplementedError

    def _check_finite(self, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss).all())
        if self.trainer.world_size > 1:  # every rank stops together, or the others would hang in the next all-reduce
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}); "
                f"the step was not applied and no checkpoint was written from it. Last good checkpoint: {last}. "
                "Lower the learning rate or raise warm-up / gradient clipping, then rerun the same command to "
                "resume from it.")

    def _shared_step(self, batch: FieldBatch, stage: str) -> torch.Tensor:
        losses = self.compute_losses(batch)
        loss = losses["loss"].mean()
        if stage == "train":
            self._check_finite(loss)
        sync = stage != "train"  # training logs the local value; evaluation averages over ranks
        terms = {f"{stage}/{name}": value.mean() for name, value in losses.items() if name != "loss"}
        if terms:
            self.log_dict(terms, batch_size=batch.batch_size, sync_dist=sync)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch.batch_size, sync_dist=sync)
        return loss

    def training_step(self, batch: FieldBatch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: FieldBatch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: FieldBatch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def configure_optimizers(self):
        optimizer = instantiate(self.optimizer_cfg, params=self.parameters())
        if not self.lr_warmup_steps:
            return optimizer
        warmup = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / self.lr_warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}
