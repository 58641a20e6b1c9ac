"""Frozen image encoders for DietNeRF's semantic-consistency loss: differentiable in their input (renders are
optimised through them), never in their weights.

Input: (B, 3, h, w) float in [0, 1]; output (B, D) embeddings. Each resizes to its input size with
F.interpolate (no antialias, as the official code: targets go down, low-resolution renders up) and normalises.
CLIP and ImageNet ViTs load from a local transformers directory (nothing is downloaded); the project's own
view-invariant encoder lives in lightning_modules/view_encoder.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evaluation.extractors.clip import CLIP_MEAN, CLIP_STD

PROJECT_ENCODER_HINT = ("or use the project's own view-invariant encoder (no download): train it with "
                        "`python experiments/train.py experiment=view_encoder_procedural`, then pass "
                        "method/semantic/encoder=view_encoder method.semantic.encoder.ckpt_path=<that run>/checkpoints/"
                        "last.ckpt")


class ImageEmbedder(nn.Module):
    """A frozen encoder: `embed(x)` on preprocessed images; `name` labels the metrics computed with it."""

    name: str = "encoder"

    def __init__(self, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                 interpolation: str = "bicubic"):
        super().__init__()
        self.input_size, self.interpolation = tuple(input_size), interpolation
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def freeze(self) -> "ImageEmbedder":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "ImageEmbedder":
        return super().train(False)  # frozen: dropout / normalisation statistics never switch to training

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        x = images
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode=self.interpolation, align_corners=False)
        return self.embed((x - self.mean) / self.std)


def _local_model_dir(path: Optional[str], kind: str) -> Path:
    if path is None or not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"DietNeRF's semantic loss needs a local {kind} directory (config.json + weights, as save_pretrained "
            f"writes them); got {path!r}, which holds none. Supply it with method.semantic.encoder.path=DIR (a copy "
            f"of the model from a connected machine: nothing is downloaded here), {PROJECT_ENCODER_HINT}")
    return Path(path)


class CLIPViTEmbedder(ImageEmbedder):
    """CLIP's image tower (e.g. ViT-B/32) from a local transformers directory; the feature is the class token of the
    last layer before the final layer norm (768-d for ViT-B/32), as the official DietNeRF code."""

    def __init__(self, path: Optional[str] = None, interpolation: str = "bicubic", name: str = "clip-vit-b32"):
        model_dir = _local_model_dir(path, "CLIP")
        from transformers import CLIPVisionModel  # imported on use: transformers costs seconds at import

        model = CLIPVisionModel.from_pretrained(str(model_dir), local_files_only=True)
        size = model.config.image_size
        super().__init__((size, size), CLIP_MEAN, CLIP_STD, interpolation)
        self.model, self.name = model, name
        self.freeze()

    def embed(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).last_hidden_state[:, 0]  # post_layernorm applies only to pooler_output


class ViTEmbedder(ImageEmbedder):
    """An ImageNet ViT (transformers ViTModel, local directory; Table 4.4); the class token of its last layer."""

    def __init__(self, path: Optional[str] = None, interpolation: str = "bicubic", name: str = "vit"):
        model_dir = _local_model_dir(path, "ViT")
        from transformers import ViTModel

        model = ViTModel.from_pretrained(str(model_dir), local_files_only=True, add_pooling_layer=False)
        processor = model_dir / "preprocessor_config.json"
        stats = json.loads(processor.read_text()) if processor.is_file() else {}
        size = model.config.image_size
        super().__init__((size, size), stats.get("image_mean", (0.5, 0.5, 0.5)), stats.get("image_std", (0.5, 0.5, 0.5)),
                         interpolation)
        self.model, self.name = model, name
        self.freeze()

    def embed(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).last_hidden_state[:, 0]
