"""CLIP image embeddings (for FID_CLIP, Kynkäänniemi et al. 2023) from a local transformers CLIPModel directory.

Preprocessing follows CLIP: bicubic resize of the shorter side to the model's image size, centre crop, CLIP
mean/std; features are the projected image embeddings, L2-normalised by default (as clean-fid's CLIP features).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from evaluation.extractors.base import FeatureExtractor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODEL_DIR_ENV = "FIELDGEN_CLIP_DIR"


class CLIPExtractor(FeatureExtractor):
    """Image features of a CLIP model saved with `save_pretrained` (e.g. openai/clip-vit-base-patch32)."""

    name = "clip"
    input_size = None  # resized and cropped in _forward, keeping the aspect ratio as CLIP does
    channels = 3

    def __init__(self, model_dir: Optional[Union[str, Path]] = None, device: Union[str, torch.device] = "cpu",
                 batch_size: int = 64, normalize: bool = True):
        super().__init__(device, batch_size)
        model_dir = model_dir or os.environ.get(MODEL_DIR_ENV)
        if not model_dir or not (Path(model_dir) / "config.json").is_file():
            raise FileNotFoundError(
                f"the 'clip' extractor needs a local CLIP model directory (config.json + weights, as written by "
                f"CLIPModel.save_pretrained, e.g. a copy of openai/clip-vit-base-patch32); got {model_dir!r}. Pass "
                f"model_dir or set ${MODEL_DIR_ENV}. Nothing is downloaded.")
        from transformers import CLIPModel  # imported on use: transformers costs seconds at import

        self.model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).to(self.device).eval()
        self.image_size = self.model.config.vision_config.image_size
        self.normalize = normalize
        self.mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        weights = sorted(p.name for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin"))
        self.fingerprint = f"{Path(model_dir).resolve()}:{weights}:{normalize}"

    def _forward(self, x: Tensor) -> tuple[Tensor, None]:
        height, width = x.shape[-2:]
        scale = self.image_size / min(height, width)
        size = (max(self.image_size, round(height * scale)), max(self.image_size, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=scale < 1).clamp(0, 1)
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        x = x[..., top:top + self.image_size, left:left + self.image_size]
        output = self.model.get_image_features(pixel_values=(x - self.mean) / self.std)
        features = output if isinstance(output, Tensor) else output.pooler_output  # transformers 4 vs 5
        return (F.normalize(features, dim=-1) if self.normalize else features), None
