"""Stops a diverging run before the diverged step is applied (so before any checkpoint holds it): a training loss far
above its recent median, or non-finite gradients. The NaN-loss guard of FieldModule catches what is already NaN."""
from __future__ import annotations

from collections import deque
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_modules.base import NonFiniteLossError, resume_advice


class DivergenceError(NonFiniteLossError):
    """The training loss spiked or the gradients became non-finite; the step was not applied."""


class DivergenceGuard(Callback):
    """Raises DivergenceError when a training loss exceeds `loss_spike_factor` x the median of the last `window`
    losses (checked once `window` are recorded; None: off), or when `check_gradients` finds a non-finite gradient."""

    def __init__(self, loss_spike_factor: Optional[float] = 100.0, window: int = 100, check_gradients: bool = True):
        if loss_spike_factor is not None and loss_spike_factor <= 1:
            raise ValueError(f"loss_spike_factor={loss_spike_factor}: must be > 1 (the loss is compared with that "
                             "multiple of its recent median), or null to switch the check off")
        if window < 1:
            raise ValueError(f"window={window}: must be >= 1 recent losses")
        self.loss_spike_factor, self.window, self.check_gradients = loss_spike_factor, window, check_gradients
        self.recent: deque[float] = deque(maxlen=window)

    def on_before_backward(self, trainer: L.Trainer, pl_module, loss: torch.Tensor) -> None:
        if self.loss_spike_factor is None:
            return
        value = float(loss.detach())
        median = float(torch.tensor(list(self.recent)).median()) if len(self.recent) == self.window else None
        spiked = median is not None and value > self.loss_spike_factor * abs(median)
        if trainer.world_size > 1:  # every rank stops together, or the others would hang in the next all-reduce
            spiked = trainer.strategy.reduce_boolean_decision(spiked, all=False)
        if spiked:
            raise DivergenceError(
                f"training loss {value:.4g} at global step {trainer.global_step} is over {self.loss_spike_factor:g}x "
                f"the median {median:.4g} of the last {self.window} steps: the run is diverging "
                f"(callbacks.divergence_guard.loss_spike_factor=null turns this check off). "
                + resume_advice(trainer))
        self.recent.append(value)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module, optimizer) -> None:
        if not self.check_gradients or getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16's grad scaler skips the steps whose gradients overflow, as it should
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not bool(torch.nn.utils.get_total_norm(grads).isfinite()):
            bad = sum(not bool(g.isfinite().all()) for g in grads)
            raise DivergenceError(f"{bad} of {len(grads)} gradients are NaN or infinite at global step "
                                  f"{trainer.global_step} (with a finite loss): the run is diverging. "
                                  + resume_advice(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recent = deque(state_dict["recent"], maxlen=self.window)
