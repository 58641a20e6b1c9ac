"""Drawing and completing fields with a trained method in seeded batches, and the samples.npz / samples.png files.

samples.npz: `values` (N, P, C) float32 in [-1, 1]; `coords` (P, Dm) shared by every sample; `domain` (its spec as
JSON); `images` uint8 (N, H, W, C) in 0..255 for 2-D grid domains, on the data's level grid (a 17-level digit
is stored as 255 l / 16, rounded); `raw` in the data's own units otherwise (lat-lon physical values, voxel
occupancy) when the data's field maker is known.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from hydra.utils import instantiate

from datamodules.fields import Domain, FieldBatch
from datamodules.images import to_images
from datamodules.render import render_fields
from lightning_modules.base import CapabilityError

log = logging.getLogger(__name__)

HIDDEN_REGIONS = ("top", "bottom", "left", "right", "center")


def sampler_options(module, sampler: dict, order: Optional[str] = None) -> dict:
    """The method's sampler settings to override (None keeps one), and the generation order where it has orders."""
    options = {key: value for key, value in sampler.items() if value is not None}
    if order is not None:
        if not module.capabilities.orders:
            raise CapabilityError(
                f"order={order}: method '{module.method_name}' does not generate in a chosen order; methods that "
                f"do: {module.methods_where(lambda capabilities: capabilities.orders)}")
        options["order"] = order
    return options


def draw(module, num_samples: int, batch_size: int, seed: int, resolution=None, progress: bool = False,
         **options) -> tuple[torch.Tensor, torch.Tensor, Domain]:
    """(values (N, P, C), coords (P, Dm), domain) of `num_samples` fields drawn in batches from one seeded
    generator on the module's device; `options` go to the method's `sample` (see sampler_options)."""
    generator = torch.Generator(device=module.device).manual_seed(seed)
    chunks, fields = [], None
    for start in range(0, num_samples, batch_size):
        fields = module.sample(min(batch_size, num_samples - start), generator=generator, resolution=resolution,
                               progress=progress, **options)
        chunks.append(fields.values.float().cpu())
        log.info("sampled %d / %d", start + len(chunks[-1]), num_samples)
    return torch.cat(chunks), fields.coords[0].cpu(), fields.domain


def hidden_region(domain: Domain, name: str) -> torch.Tensor:
    """(N,) bool: the points of a 2-D grid in region `name` (a half, or the centre quarter)."""
    if domain.kind != "grid2d":
        raise ValueError(f"hidden regions are defined on 2-D images; the data is on a {domain.kind} domain")
    if name not in HIDDEN_REGIONS:
        raise ValueError(f"unknown hidden region {name!r}; valid: {', '.join(HIDDEN_REGIONS)}")
    height, width = domain.shape
    rows, cols = torch.arange(height)[:, None], torch.arange(width)[None, :]
    region = {"top": rows < height // 2, "bottom": rows >= height - height // 2, "left": cols < width // 2,
              "right": cols >= width - width // 2,
              "center": (rows >= height // 4) & (rows < height - height // 4) & (cols >= width // 4)
              & (cols < width - width // 4)}[name]
    mask = region.expand(height, width).reshape(-1)
    if not mask.any() or mask.all():
        raise ValueError(f"region {name!r} of a {height}x{width} image hides {int(mask.sum())} of {mask.numel()} "
                         "pixels; completion needs some hidden and some observed pixels")
    return mask


def complete(module, values: torch.Tensor, observed: torch.Tensor, batch_size: int, seed: int,
             progress: bool = False, **options) -> torch.Tensor:
    """(N, P, C) completions of full fields `values` whose `observed` (P,) points are kept, in seeded batches."""
    generator = torch.Generator(device=module.device).manual_seed(seed)
    chunks = []
    for start in range(0, len(values), batch_size):
        chunk = values[start:start + batch_size].to(module.device)
        fields = FieldBatch.from_values(chunk, module.domain)
        mask = observed.to(module.device).expand(len(chunk), -1)
        chunks.append(module.complete(fields, mask, generator=generator, progress=progress, **options).values.cpu())
        log.info("completed %d / %d", start + len(chunk), len(values))
    return torch.cat(chunks)


def save_samples(output_dir: Path, values: torch.Tensor, coords: torch.Tensor, domain: Domain,
                 field_maker=None) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"values": values.numpy(), "coords": coords.numpy(), "domain": np.array(json.dumps(domain.spec()))}
    if domain.kind == "grid2d":
        arrays["images"] = to_images(values, domain, field_maker.num_levels if field_maker is not None else None)
    elif field_maker is not None:
        arrays["raw"] = field_maker.at_resolution(domain.shape).to_raw(values.numpy())
    path = output_dir / "samples.npz"
    np.savez_compressed(path, **arrays)
    shown = values[:64]
    render_fields(shown, domain, nrow=int(math.ceil(math.sqrt(len(shown))))).save(output_dir / "samples.png")
    return path


def field_maker_of(module):
    """The field maker a module was trained with (from its run config), to decode samples; None if unknown."""
    data_cfg = (module.run_config or {}).get("data") or {}
    return instantiate(data_cfg["field_maker"]) if "field_maker" in data_cfg else None
