"""Drawing fields from a trained method in seeded batches, and the samples.npz / samples.png files of a run.

samples.npz: `values` (N, P, C) float32 in [-1, 1]; `coords` (P, Dm) shared by every sample; `domain` (its spec as
JSON); `images` uint8 (N, H, W, C) in 0..255 for 2-D grid domains; `raw` in the data's own units otherwise (lat-lon
physical values, voxel occupancy) when the data's field maker is known.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from datamodules.fields import Domain
from datamodules.render import render_fields

log = logging.getLogger(__name__)


def draw(module, num_samples: int, batch_size: int, seed: int, resolution=None, progress: bool = False,
         **sampler) -> tuple[torch.Tensor, torch.Tensor, Domain]:
    """(values (N, P, C), coords (P, Dm), domain) of `num_samples` fields drawn in batches from one seeded
    generator on the module's device; `sampler` overrides the method's sampler settings (None keeps one)."""
    sampler = {key: value for key, value in sampler.items() if value is not None}
    generator = torch.Generator(device=module.device).manual_seed(seed)
    chunks, fields = [], None
    for start in range(0, num_samples, batch_size):
        fields = module.sample(min(batch_size, num_samples - start), generator=generator, resolution=resolution,
                               progress=progress, **sampler)
        chunks.append(fields.values.float().cpu())
        log.info("sampled %d / %d", start + len(chunks[-1]), num_samples)
    return torch.cat(chunks), fields.coords[0].cpu(), fields.domain


def to_images(values: torch.Tensor, domain: Domain) -> np.ndarray:
    """uint8 (N, H, W, C) in 0..255 of 2-D grid fields with values in [-1, 1]."""
    dense = domain.to_dense(values).permute(0, 2, 3, 1)
    return ((dense.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def save_samples(output_dir: Path, values: torch.Tensor, coords: torch.Tensor, domain: Domain,
                 field_maker=None) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"values": values.numpy(), "coords": coords.numpy(), "domain": np.array(json.dumps(domain.spec()))}
    if domain.is_grid and len(domain.shape) == 2:
        arrays["images"] = to_images(values, domain)
    elif field_maker is not None:
        arrays["raw"] = field_maker.at_resolution(domain.shape).to_raw(values.numpy())
    path = output_dir / "samples.npz"
    np.savez_compressed(path, **arrays)
    shown = values[:64]
    render_fields(shown, domain, nrow=int(math.ceil(math.sqrt(len(shown))))).save(output_dir / "samples.png")
    return path


def field_maker_of(module, data_cfg: Optional[dict] = None):
    """The field maker a module was trained with (from its run config), to decode samples; None if unknown."""
    from hydra.utils import instantiate

    data_cfg = data_cfg or (module.run_config or {}).get("data") or {}
    return instantiate(data_cfg["field_maker"]) if "field_maker" in data_cfg else None
