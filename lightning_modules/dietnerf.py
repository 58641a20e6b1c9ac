"""DietNeRF (Jain, Tancik, Abbeel 2021; thesis ch. 4): NeRF with a semantic-consistency loss on novel poses.

Every `every` steps (official: 10) a low-resolution jittered render from a pose of the law pi is embedded by a
frozen image encoder and pulled towards the embedding of a random training view: L_SC = -lambda cos(phi(render),
phi(view)), for the coarse and the fine render (official lambda: 0.1 each), added to that step's colour MSE.
The MSE-only fine-tuning phase is this method with semantic.enabled=false, resumed from a DietNeRF checkpoint
(`ckpt_path=`): step, learning rate and Adam state continue. Metrics of the loss name the encoder:
`train/semantic[<encoder>]`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor

from datamodules.cameras import HemispherePoses, rays_from_poses
from datamodules.fields import FieldBatch
from evaluation.extractors.image_embedders import ImageEmbedder
from lightning_modules.nerf import NeRF


def jittered_grid(height: int, width: int, size: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flat pixel indices of a size x size grid with stride H // size, offset by a random whole number of pixels
    in [0, H mod size) per axis: the official code's low-resolution render (168 of 400: a random 336^2 window)."""
    if size > min(height, width):
        raise ValueError(f"method.semantic.render_size={size} exceeds the {height}x{width} views; lower it")
    stride_h, stride_w = height // size, width // size
    offset = [int(torch.randint(0, extent % size, (), generator=generator)) if extent % size else 0
              for extent in (height, width)]
    rows = offset[0] + stride_h * torch.arange(size)
    cols = offset[1] + stride_w * torch.arange(size)
    return (rows[:, None] * width + cols[None, :]).reshape(-1)


def semantic_consistency(encoder: ImageEmbedder, render: Tensor, target: Tensor, weight: float) -> Tensor:
    """-weight * cos(encoder(render), target): render (1, 3, h, w) in [0, 1], target (1, D) embedding."""
    return -weight * F.cosine_similarity(encoder(render).float(), target.float(), dim=-1).mean()


class DietNeRF(NeRF):
    """semantic: enabled, every (K), weight (lambda, fine), weight_coarse, render_size (the jittered grid's side),
    poses (HemispherePoses arguments: pi), encoder (an ImageEmbedder config), checkpoint (recompute the render in
    the backward pass), autocast (bf16 render, off in the official configs)."""

    method_name = "dietnerf"
    capabilities = NeRF.capabilities

    def __init__(self, semantic: dict, **kwargs):
        super().__init__(**kwargs)
        self.semantic = {"enabled": True, "every": 10, "weight": 0.1, "weight_coarse": 0.1, "render_size": 168,
                         "checkpoint": True, "autocast": False, **semantic}
        if self.semantic["every"] < 1:
            raise ValueError(f"method.semantic.every is a step interval >= 1, got {self.semantic['every']}")
        jittered_grid(*self.domain.shape, self.semantic["render_size"])  # refuse a render size too large now
        self.semantic_poses = HemispherePoses(**self.semantic.get("poses", {}))
        self._frozen: Optional[tuple[ImageEmbedder, Tensor]] = None  # built at fit start; no part of the checkpoint
        self._last_semantic: Optional[Tensor] = None

    @property
    def encoder(self) -> ImageEmbedder:
        return self._frozen[0]

    def on_fit_start(self) -> None:
        if not self.semantic["enabled"]:
            return
        encoder = instantiate(self.semantic["encoder"]).to(self.device)
        if not isinstance(encoder, ImageEmbedder):
            raise TypeError(f"method.semantic.encoder builds a {type(encoder).__name__}, not an ImageEmbedder")
        with torch.no_grad():  # the training views' embeddings, computed once
            views = self.trainer.datamodule.train_images().permute(0, 3, 1, 2).to(self.device)
            targets = torch.cat([encoder(view[None]) for view in views])
        self._frozen = (encoder, targets)

    def semantic_losses(self) -> dict[str, Tensor]:
        """L_SC for the coarse and fine renders of one jittered low-resolution view from a pose of pi."""
        config, (height, width) = self.semantic, self.domain.shape
        pose = self.semantic_poses.sample(1)
        rays = rays_from_poses(pose, self.domain)[0][jittered_grid(height, width, config["render_size"])]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config["autocast"]):
            out = self.render(rays.to(self.device), checkpointed=config["checkpoint"])
        encoder, targets = self._frozen
        target = targets[int(torch.randint(len(targets), ()))][None]
        size = config["render_size"]
        weights = {"fine": config["weight"], "coarse": config["weight_coarse"]}
        return {level: semantic_consistency(
            encoder, outputs["rgb"].float().clamp(0, 1).reshape(1, size, size, 3).permute(0, 3, 1, 2), target,
            weights[level]) for level, outputs in out.items()}

    def training_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        losses = self.compute_losses(batch)
        self.check_collapse(float(losses["acc"].mean()))
        if self.semantic["enabled"] and self.global_step % self.semantic["every"] == 0:
            terms = self.semantic_losses()
            total = sum(terms.values())
            self._last_semantic = total.detach()
            losses["loss"] = losses["loss"] + total
        if self._last_semantic is not None:  # logged every step (its latest value): the logger writes only every
            # log_every_n_steps, which a term present every K steps alone would miss
            losses[f"semantic[{self.encoder.name}]"] = self._last_semantic.expand(batch.batch_size)
        return self.log_losses(losses, batch, "train")
