"""What every trained module shares (FieldModule: optimiser with warm-up and lr schedule, per-sample loss logging,
the finite-loss guard, checkpoint metadata) and what every generative method adds (FieldGenerativeModule: the
registry and its capability checks)."""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Iterable, Optional

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from datamodules.fields import DOMAIN_KINDS, Domain, FieldBatch, Resolution
from evaluation.likelihood import LikelihoodModel
from evaluation.protocol import Capabilities
from evaluation.views import ViewRenderer

LR_SCHEDULES = ("constant", "cosine")  # after the warm-up: the configured lr, or a half cosine to 0 at max_steps


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the step was not applied."""


def resume_advice(trainer) -> str:
    """What to do after a run stopped diverging: the last good checkpoint, and how to resume it with safer settings."""
    last = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
    resume = (f"then resume by adding ckpt_path={last} to the command (changed optimiser settings take effect on "
              "resume)" if last else "then rerun (no checkpoint was saved yet)")
    return (f"The step was not applied and no checkpoint was written from it. Last good checkpoint: "
            f"{last or 'none saved yet'}. Lower the learning rate (method.optimizer.lr=...) or raise warm-up / "
            f"gradient clipping, {resume}.")


class DomainNotSupportedError(ValueError):
    """A method was configured on a domain it cannot handle."""


class CapabilityError(ValueError):
    """A method was asked for something its capabilities do not include (another resolution, completion, ...)."""


def as_container(value: Any) -> Any:
    """Plain dicts/lists all the way down, for hyper-parameters (checkpoints load them with weights_only=True, W&B
    and config comparisons read them without omegaconf)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        return [as_container(item) for item in value]
    if isinstance(value, dict):
        return {key: as_container(item) for key, item in value.items()}
    return value


class FieldModule(L.LightningModule):
    """Base LitModule of anything trained on fields: optimiser with warm-up, per-sample loss logging, the finite-loss
    guard, checkpoint metadata. Subclasses implement `compute_losses(batch) -> dict` of per-sample (B,) losses with a
    "loss" key. Generative methods derive from FieldGenerativeModule; other trained parts (e.g. DietNeRF's
    view encoder) from this class, so they stay out of the method registry."""

    # hyper-parameters that decide parameter shapes: a checkpoint must agree on these to be loaded
    structural_hparams: tuple[str, ...] = ("domain", "signal_dim", "net")

    def __init__(self, domain: dict | Domain, signal_dim: int, num_levels: Optional[int], optimizer: dict,
                 lr_warmup_steps: int = 0, lr_schedule: str = "constant", compile: bool = False):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"method.lr_schedule={lr_schedule!r} is not one of {LR_SCHEDULES}")
        self.lr_schedule = lr_schedule
        self.domain: Domain = instantiate(domain) if isinstance(domain, (dict, DictConfig)) else domain
        self.check_domain(self.domain)
        self.signal_dim, self.num_levels = signal_dim, num_levels
        self.optimizer_cfg, self.lr_warmup_steps, self.compile_net = optimizer, lr_warmup_steps, compile
        self.run_config: Optional[dict] = None  # the composed run config, set by train.py, kept in checkpoints

    @classmethod
    def check_domain(cls, domain: Domain) -> None:
        """Raise DomainNotSupportedError unless the module handles `domain` (called before any data is read)."""

    def networks(self) -> dict[str, nn.Module]:
        """The method's networks: every child module with parameters (compiled by `compile`, timed by benchmarks)."""
        return {name: child for name, child in self.named_children() if next(child.parameters(), None) is not None}

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            # seed_everything gives every rank the same stream: offset it so ranks draw different t and noise
            torch.manual_seed(torch.initial_seed() + self.global_rank)
        if self.compile_net:
            self.compile_networks()

    def compile_networks(self) -> None:
        """torch.compile each network's forward in place (state_dict keys stay the same)."""
        for network in self.networks().values():
            network.compile()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fieldgen_method"] = f"{type(self).__module__}.{type(self).__qualname__}"
        # plain containers load under torch.load(weights_only=True), which Lightning uses when resuming
        checkpoint["hyper_parameters"] = {k: as_container(v) for k, v in checkpoint["hyper_parameters"].items()}
        if self.run_config is not None:
            checkpoint["fieldgen_config"] = self.run_config

    # ---- training -------------------------------------------------------------------------------------------------
    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _check_finite(self, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss).all())
        if self.trainer.world_size > 1:  # every rank stops together, or the others would hang in the next all-reduce
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(f"training loss is {loss.item()} at global step {self.global_step} (epoch "
                                     f"{self.current_epoch}). " + resume_advice(self.trainer))

    def _shared_step(self, batch: FieldBatch, stage: str) -> torch.Tensor:
        return self.log_losses(self.compute_losses(batch), batch, stage)

    def log_losses(self, losses: dict[str, torch.Tensor], batch: FieldBatch, stage: str) -> torch.Tensor:
        """The mean loss of per-sample `losses` (checked finite when training), each term logged as <stage>/<name>."""
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

    def on_train_start(self) -> None:
        self.apply_configured_optimizer_settings()

    def apply_configured_optimizer_settings(self) -> None:
        """Resuming restores each optimiser's hyper-parameters (lr, betas, ...) from the checkpoint: set the configured
        ones instead, so a changed lr takes effect, scaled by the (LambdaLR) schedule's factor at this step with
        the configured warm-up. A fresh run is left as it is (the values agree)."""
        configured = instantiate(self.optimizer_cfg, params=[torch.zeros(1, requires_grad=True)]).defaults
        schedulers = {id(config.scheduler.optimizer): config.scheduler for config in self.trainer.lr_scheduler_configs}
        for optimizer in self.trainer.optimizers:
            scheduler = schedulers.get(id(optimizer))
            for i, group in enumerate(optimizer.param_groups):
                group.update({key: value for key, value in configured.items() if key != "lr"})
                group["lr"] = configured["lr"]
                if scheduler is not None:
                    scheduler.base_lrs[i] = group["initial_lr"] = configured["lr"]
                    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                        group["lr"] = configured["lr"] * scheduler.lr_lambdas[i](scheduler.last_epoch)

    def lr_factor(self, step: int) -> float:
        """The configured lr's multiplier at optimiser step `step` (0-based): the linear warm-up over
        lr_warmup_steps, times 1 (constant) or a half cosine from 1 to 0 at trainer.max_steps (cosine)."""
        factor = min(1.0, (step + 1) / self.lr_warmup_steps) if self.lr_warmup_steps else 1.0
        if self.lr_schedule == "cosine":
            total = self.trainer.max_steps
            if total is None or total < 1:
                raise ValueError(f"method.lr_schedule=cosine decays the lr to 0 at trainer.max_steps, which is "
                                 f"{total}; set trainer.max_steps=N, or method.lr_schedule=constant")
            factor *= 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        return factor

    def configure_optimizers(self):
        optimizer = instantiate(self.optimizer_cfg, params=self.parameters())
        if not self.lr_warmup_steps and self.lr_schedule == "constant":
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class FieldGenerativeModule(FieldModule):
    """Base LitModule of a generative method over fields.

    A concrete method sets `method_name` (its `method=` config name, which registers the class) and
    `capabilities`, builds its networks in `__init__`, and implements `compute_losses(batch) -> dict` of per-sample
    (B,) losses with a "loss" key and `sample(num_samples, ...) -> FieldBatch`; a capability adds its interface
    (a likelihood: `LikelihoodModel.bits_per_dim`; completion: `complete`; views: `ViewRenderer.render_views`).
    """

    registry: ClassVar[dict[str, type["FieldGenerativeModule"]]] = {}  # method_name -> class, filled on definition
    method_name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "method_name" not in cls.__dict__:  # a shared base of methods (e.g. DiffusionMethod), not a method
            return
        claims = {"likelihood": (cls.capabilities.likelihood is not None, issubclass(cls, LikelihoodModel)),
                  "renders_views": (cls.capabilities.renders_views, issubclass(cls, ViewRenderer)),
                  "completion": (cls.capabilities.completion, cls.complete is not FieldGenerativeModule.complete)}
        for capability, (declared, implemented) in claims.items():
            if declared != implemented:
                raise TypeError(f"{cls.__qualname__}: capabilities.{capability} is {declared} but the interface it "
                                f"needs is {'' if implemented else 'not '}implemented (see FieldGenerativeModule)")
        known = cls.registry.get(cls.method_name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"method_name '{cls.method_name}' is taken by {known.__module__}.{known.__qualname__}")
        cls.registry[cls.method_name] = cls

    @classmethod
    def methods_where(cls, predicate: Callable[[Capabilities], bool]) -> list[str]:
        """Names of the registered methods whose capabilities satisfy `predicate` (for error messages)."""
        return sorted(name for name, method in cls.registry.items() if predicate(method.capabilities))

    @classmethod
    def check_domain(cls, domain: Domain) -> None:
        """Raise DomainNotSupportedError unless the method handles `domain` (called before any data is read);
        a method with further limits (e.g. square images) extends it."""
        if domain.kind not in cls.capabilities.domains:
            accepting = cls.methods_where(lambda capabilities: domain.kind in capabilities.domains)
            raise DomainNotSupportedError(
                f"method '{cls.method_name}' handles {[DOMAIN_KINDS[k] for k in cls.capabilities.domains]} data, "
                f"but the data is on a {DOMAIN_KINDS[domain.kind]} domain; methods that accept '{domain.kind}': "
                f"{accepting}")

    def sampling_domain(self, resolution: Resolution = None) -> Domain:
        """The domain to sample on at `resolution` (None: the training one), refused unless resolution-free."""
        domain = self.domain if resolution is None else self.domain.at_resolution(resolution)
        if domain.shape != self.domain.shape and not self.capabilities.resolution_free:
            raise CapabilityError(
                f"method '{self.method_name}' samples at its training resolution {list(self.domain.shape)} only, "
                f"got resolution={resolution}; resolution-free sampling needs one of "
                f"{self.methods_where(lambda capabilities: capabilities.resolution_free)}")
        return domain

    def sampling_inputs(self, fields: Iterable[FieldBatch], num_samples: int) -> dict:
        """What `sample(num_samples, **inputs)` needs besides a count, taken from data `fields` (iterated only when
        needed) by a method that cannot sample unconditionally (a diffusion autoencoder's latents); none by default."""
        return {}

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution: Resolution = None,
               progress: bool = False, **options) -> FieldBatch:
        """`num_samples` fields on `sampling_domain(resolution)`; `options` are the method's sampler settings."""
        raise NotImplementedError

    def complete(self, fields: FieldBatch, observed: torch.Tensor, generator: Optional[torch.Generator] = None,
                 progress: bool = False, **options) -> FieldBatch:
        """Full fields whose `observed` (B, N) points keep their values exactly and the rest are generated; a
        method with `capabilities.completion` overrides it."""
        raise CapabilityError(
            f"method '{self.method_name}' cannot complete partly observed fields; methods that can: "
            f"{self.methods_where(lambda capabilities: capabilities.completion)}")
