"""NeRF (Mildenhall et al. 2020, as DietNeRF's code, thesis ch. 4): a radiance field of one scene from its posed views.

A scene's views are fields on a Rays domain; `compute_losses` draws the ray batch from the step's view through the
shared point sampler (the centre pre-crop early on), renders it coarse + fine and returns the per-view colour MSE
(on [0, 1] colours, as the official code). `sample(n)` renders n novel views from the pose law `render_poses`;
`render_views` renders given rays (evaluation). Simplified NeRF (Table 7.1) is num_fine=0 with its own sizes.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from hydra.utils import instantiate
from torch.utils.checkpoint import checkpoint as recompute

from datamodules.cameras import HemispherePoses, rays_from_poses
from datamodules.fields import FieldBatch
from datamodules.points import PointSubset
from evaluation.protocol import Capabilities
from evaluation.views import ViewRenderer
from lightning_modules.base import FieldGenerativeModule
from networks.nerf import NeRFMLP
from networks.volume_rendering import render_rays

log = logging.getLogger(__name__)


class CollapsedRunError(RuntimeError):
    """The radiance field renders (nearly) nothing everywhere: training would go on from a degenerate state."""


class NeRF(FieldGenerativeModule, ViewRenderer):
    """rays_per_step: rays drawn from each view of a step (official: 1024 from one view). num_coarse / num_fine:
    stratified and importance samples per ray (64 / 128; num_fine 0: a single network). precrop_steps /
    precrop_fraction: the first steps draw rays from the central crop only (official 500 / 0.5). chunk: rays
    rendered at once. lr_decay_steps: lr * 0.1^(step / lr_decay_steps) (official 500k). density_noise_std: noise on
    the raw density while training (official Blender configs: 0). render_poses: HemispherePoses arguments of
    `sample`. collapse: the guard against a field that renders nothing (`min_acc`, `patience` steps, from
    `after_step`; action "raise" or "restart" up to `max_restarts` times)."""

    method_name = "nerf"
    capabilities = Capabilities(domains=("rays",), resolution_free=True, renders_views=True)

    def __init__(self, net: dict, rays_per_step: int = 1024, num_coarse: int = 64, num_fine: int = 128,
                 perturb: bool = True, density_noise_std: float = 0.0, precrop_steps: int = 500,
                 precrop_fraction: float = 0.5, chunk: int = 32768, white_background: bool = True,
                 lr_decay_steps: int = 500_000, render_poses: Optional[dict] = None, collapse: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if num_coarse < 2 or num_fine < 0:
            raise ValueError(f"NeRF needs method.num_coarse >= 2 and method.num_fine >= 0 samples per ray, got "
                             f"{num_coarse} and {num_fine}")
        self.coarse = NeRFMLP(**net)
        self.fine = NeRFMLP(**net) if num_fine > 0 else None
        self.ray_sampler = PointSubset(rays_per_step, name="method.rays_per_step")
        self.ray_sampler.count_for(self.domain.num_points)  # refused now, not at the first step
        self.register_buffer("precrop", self.domain.centre_crop(precrop_fraction), persistent=False)
        self.render_poses = HemispherePoses(**(render_poses or {}))
        self.collapse = {"min_acc": 1e-3, "patience": 200, "after_step": 0, "action": "raise", "max_restarts": 2,
                         **(collapse or {})}
        if self.collapse["action"] not in ("raise", "restart"):
            raise ValueError(f"method.collapse.action is 'raise' or 'restart', got {self.collapse['action']!r}")
        self.collapsed_steps, self.restarts = 0, 0

    # ---- rendering ------------------------------------------------------------------------------------------------
    def render(self, rays: torch.Tensor, checkpointed: bool = False) -> dict[str, dict[str, torch.Tensor]]:
        """Rays (R, 6) -> {"coarse", "fine"} dicts of rgb (R, 3), depth, acc (R, 1), in chunks of `chunk` rays
        (each recomputed in the backward pass when `checkpointed`, to save memory)."""
        hp = self.hparams
        perturb = hp.perturb and self.training

        def render_chunk(chunk: torch.Tensor):
            out = render_rays(chunk, self.coarse, self.fine, self.domain.near, self.domain.far, hp.num_coarse,
                              hp.num_fine, perturb, hp.white_background, hp.density_noise_std)
            return {level: {k: v for k, v in outputs.items() if k != "weights"} for level, outputs in out.items()}

        outputs = [recompute(render_chunk, rays[i:i + hp.chunk], use_reentrant=False) if checkpointed
                   else render_chunk(rays[i:i + hp.chunk]) for i in range(0, len(rays), hp.chunk)]
        return {level: {key: torch.cat([o[level][key] for o in outputs]) for key in outputs[0][level]}
                for level in outputs[0]}

    @staticmethod
    def final(outputs: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The fine network's outputs (the coarse one's without a fine network)."""
        return outputs.get("fine", outputs["coarse"])

    @torch.no_grad()
    def render_views(self, rays: FieldBatch) -> dict[str, torch.Tensor]:
        batch, num_rays = rays.batch_size, rays.num_points
        out = self.final(self.render(rays.coords.reshape(-1, 6).to(self.device)))
        return {key: value.reshape(batch, num_rays, -1) for key, value in out.items()}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False, **options) -> FieldBatch:
        """Views of the scene from `num_samples` cameras drawn from `render_poses`, colours in [-1, 1]."""
        if options:
            raise ValueError(f"NeRF renders views with no sampler options, got {sorted(options)}")
        domain = self.sampling_domain(resolution)
        rays = rays_from_poses(self.render_poses.sample(num_samples, generator), domain).to(self.device)
        empty = torch.zeros(*rays.shape[:2], 3, device=self.device)
        rgb = self.render_views(FieldBatch(coords=rays, values=empty, domain=domain))["rgb"]
        return FieldBatch(coords=rays, values=(rgb * 2 - 1).clamp(-1, 1), domain=domain)

    # ---- training -------------------------------------------------------------------------------------------------
    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        """Per view: colour MSE of the fine + coarse renders of its ray batch (on [0, 1]), with their PSNRs."""
        early = self.training and self.global_step < self.hparams.precrop_steps
        candidates = self.precrop.expand(batch.batch_size, -1) if early else None
        rays = self.ray_sampler(batch, candidates=candidates)
        out = self.render(rays.coords.reshape(-1, 6))
        target = (rays.values + 1) / 2
        losses = {}
        for level, outputs in out.items():
            mse = (outputs["rgb"].reshape(target.shape) - target).square().mean((1, 2))
            losses[f"mse_{level}"], losses[f"psnr_{level}"] = mse, -10 * torch.log10(mse.detach())
        losses["acc"] = self.final(out)["acc"].reshape(batch.batch_size, -1).mean(1).detach()
        losses["loss"] = sum(losses[f"mse_{level}"] for level in out)
        return losses

    def training_step(self, batch: FieldBatch, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        self.check_collapse(float(losses["acc"].mean()))
        return self.log_losses(losses, batch, "train")

    def check_collapse(self, acc: float) -> None:
        """Count consecutive steps whose renders are (nearly) empty; after `patience` of them restart or raise."""
        guard = self.collapse
        self.collapsed_steps = self.collapsed_steps + 1 if (
            acc < guard["min_acc"] and self.global_step >= guard["after_step"]) else 0
        if self.collapsed_steps < guard["patience"]:
            return
        message = (f"NeRF collapsed: mean accumulation {acc:.2e} < {guard['min_acc']} for {guard['patience']} steps "
                   f"up to step {self.global_step} (the field renders empty space everywhere)")
        if guard["action"] == "restart" and self.restarts < guard["max_restarts"]:
            self.restarts += 1
            self.collapsed_steps = 0
            for network in self.networks().values():
                network.reset_parameters()
            if self._trainer is not None:
                for optimizer in self.trainer.optimizers:
                    optimizer.state.clear()
            log.warning("%s; restarted from a fresh initialisation (restart %d of %d)", message, self.restarts,
                        guard["max_restarts"])
            return
        raise CollapsedRunError(f"{message}. Lower the learning rate, check near/far and the poses, or set "
                                "method.collapse.action=restart")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["nerf_collapse"] = {"collapsed_steps": self.collapsed_steps, "restarts": self.restarts}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("nerf_collapse", {})
        self.collapsed_steps, self.restarts = state.get("collapsed_steps", 0), state.get("restarts", 0)

    def configure_optimizers(self):
        optimizer = instantiate(self.optimizer_cfg, params=[p for p in self.parameters() if p.requires_grad])
        decay = self.hparams.lr_decay_steps

        def schedule(step: int) -> float:  # the official exponential decay times the shared warm-up and schedule
            return self.lr_factor(step) * 0.1 ** (step / decay)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
