"""The project's view-invariant image encoder: a stand-in for CLIP in DietNeRF where no pretrained weights exist.

Trained contrastively (InfoNCE, as SimCLR) on views of procedural scenes that exclude the evaluation scene
(datamodules/view_pairs.py): two views of one scene are positives, the other scenes' views negatives, each view
degraded as a NeRF render is (lower resolution, a small shift, blur). What it gives DietNeRF is the property the
semantic loss needs, that views of one object embed close together; not CLIP's semantics. It is not a generative
method: it derives from FieldModule and is not registered.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.fields import Domain, FieldBatch
from evaluation.extractors.image_embedders import PROJECT_ENCODER_HINT, ImageEmbedder
from lightning_modules.base import FieldModule
from networks.view_encoder import ViewEncoder


def degrade_like_a_render(images: Tensor, min_size: int, max_shift: float, max_blur: float) -> Tensor:
    """Images (B, 3, H, W) in [0, 1] as a NeRF render might show them: shifted by up to max_shift pixels (edges
    repeated), blurred by a random share of a 3x3 box blur, and resampled through one random lower resolution."""
    batch, _, height, width = images.shape
    shift = (torch.rand(batch, 2, device=images.device) * 2 - 1) * max_shift * 2 / torch.tensor(
        [width, height], device=images.device)
    theta = torch.zeros(batch, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = 1, 1, shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(batch, 1, 1, 1, device=images.device) * max_blur
    x = x + mix.clamp(max=1) * (blurred - x)
    size = int(torch.randint(min_size, height + 1, ()))
    low = F.interpolate(x, size=(size, size * width // height), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


class ViewEncoderModule(FieldModule):
    """net: ViewEncoder arguments. temperature: InfoNCE's. augment: degrade_like_a_render arguments (training)."""

    def __init__(self, net: dict, temperature: float = 0.1, augment: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.net = ViewEncoder(**net)
        self.temperature = temperature
        self.augment = {"min_size": 16, "max_shift": 3.0, "max_blur": 1.0, **(augment or {})}

    @classmethod
    def check_domain(cls, domain: Domain) -> None:
        if domain.kind != "grid2d":
            raise ValueError(f"the view encoder trains on images (grid 2-D), got a {domain.kind} domain; use "
                             "data=view_pairs")

    def embed(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) embeddings (not normalised)."""
        return self.net(images * 2 - 1)

    def compute_losses(self, batch: FieldBatch) -> dict[str, Tensor]:
        """Per image: InfoNCE against the other view of its scene; retrieval accuracy; the cosine similarity to the
        positive and the mean to the negatives (the probe of Fig. 4.3: within- vs across-scene similarity)."""
        images = (batch.to_dense() + 1) / 2
        if self.training:
            images = degrade_like_a_render(images, **self.augment)
        z = F.normalize(self.embed(images), dim=-1)
        count = len(z)
        similarity = z @ z.T
        positive = (torch.arange(count, device=z.device) + count // 2) % count
        self_mask = torch.eye(count, dtype=torch.bool, device=z.device)
        logits = (similarity / self.temperature).masked_fill(self_mask, float("-inf"))
        negatives = ~self_mask & ~F.one_hot(positive, count).bool()
        return {"loss": F.cross_entropy(logits, positive, reduction="none"),
                "accuracy": (logits.argmax(1) == positive).float(),
                "cos_positive": similarity.gather(1, positive[:, None])[:, 0].detach(),
                "cos_negative": ((similarity * negatives).sum(1) / negatives.sum(1)).detach()}


class ProjectViewEncoder(ImageEmbedder):
    """The view encoder as DietNeRF's frozen encoder: trained (`ckpt_path`, a view_encoder_procedural run's
    last.ckpt) or, as the control, untrained (ckpt_path null: `net` initialised with `seed`)."""

    def __init__(self, ckpt_path: Optional[str] = None, net: Optional[dict] = None, seed: int = 0,
                 input_size: int = 64, interpolation: str = "bilinear"):
        super().__init__((input_size, input_size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation)
        if ckpt_path is not None:
            if not Path(ckpt_path).is_file():
                raise FileNotFoundError(f"no view-encoder checkpoint at {ckpt_path}; {PROJECT_ENCODER_HINT}")
            from lightning_modules.checkpointing import load_method

            module = load_method(ckpt_path)
            if not isinstance(module, ViewEncoderModule):
                raise ValueError(f"{ckpt_path} holds a {type(module).__name__}, not a view encoder; "
                                 f"{PROJECT_ENCODER_HINT}")
            self.network, self.name = module.net, "procnet"
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                self.network = ViewEncoder(**(net or {}))
            self.name = "procnet-untrained"
        self.freeze()

    def embed(self, x: Tensor) -> Tensor:
        return self.network(x)
