"""Drawing and completing fields with a trained method in seeded batches, and the samples.npz / samples.png files.

samples.npz: `values` (N, P, C) float32 in [-1, 1]; `coords` (P, Dm) shared by every sample; `domain` (its spec as
JSON); `images` uint8 (N, H, W, C) in 0..255 for 2-D grid domains, on the data's level grid (a 17-level digit
is stored as 255 l / 16, rounded); `raw` in the data's own units otherwise (lat-lon physical values, voxel
occupancy) when the data's field maker is known.

read_samples reads such a file back, or one from any other tool holding either `values` or `images`.
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

from datamodules.fields import DOMAIN_KINDS, Domain, FieldBatch
from datamodules.images import images_to_values, to_images
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


def check_mesh_domain(domain: Domain) -> None:
    """Marching-cubes renders are drawn for voxel fields only: refuse `mesh=true` on any other domain."""
    if domain.kind != "grid3d":
        raise ValueError(f"mesh=true draws marching-cubes surfaces of voxel fields; this model's fields are on "
                         f"{DOMAIN_KINDS.get(domain.kind, domain.kind)}: drop mesh=true")


def save_samples(output_dir: Path, values: torch.Tensor, coords: torch.Tensor, domain: Domain,
                 field_maker=None, mesh: bool = False) -> Path:
    """Write output_dir/samples.npz and samples.png (the first 64 fields; voxels with a marching-cubes render per
    field when `mesh`)."""
    if mesh:
        check_mesh_domain(domain)
    output_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"values": values.numpy(), "coords": coords.numpy(), "domain": np.array(json.dumps(domain.spec()))}
    if domain.kind == "grid2d":
        arrays["images"] = to_images(values, domain, field_maker.num_levels if field_maker is not None else None)
    elif field_maker is not None:
        arrays["raw"] = field_maker.at_resolution(domain.shape).to_raw(values.numpy())
    path = output_dir / "samples.npz"
    np.savez_compressed(path, **arrays)
    shown = values[:64]
    render_fields(shown, domain, nrow=int(math.ceil(math.sqrt(len(shown)))), mesh=mesh).save(output_dir / "samples.png")
    return path


SAMPLES_FORMAT = ("a .npz with `values` float (N, P, C) in [-1, 1] (P points of the data's domain, C channels), or "
                  "`images` uint8 (N, H, W, C) in 0..255 for 2-D images (lightning_modules/sampling.py)")
VALUES_OVERSHOOT = 1.5  # an unclipped sampler overshoots [-1, 1] a little; 0..255 or unscaled data lie far outside


def read_samples(path: str | Path, domain: Domain, channels: int, num_levels: Optional[int] = None,
                 prefer_images: bool = False) -> tuple[torch.Tensor, Domain]:
    """(values (N, P, C), the domain at the file's resolution) of a samples file, checked against the data's
    `domain` and `channels`: its `values`, else its `images` (first with `prefer_images`; exactly on the data's
    `num_levels` grid when given, None: read as 256 levels). Anything else (NaN, 0..255 or [0, 1] values, other
    channels) is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no samples file at {path}; expected {SAMPLES_FORMAT}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {name: arrays[name] for name in ("values", "images") if name in arrays.files}
    except Exception as err:  # numpy raises several types for a non-npz or pickled file
        raise ValueError(f"{path} is not a readable .npz ({type(err).__name__}: {err}); expected "
                         f"{SAMPLES_FORMAT}") from None
    if "values" in found and not (prefer_images and "images" in found):
        return _checked_values(found["values"], domain, channels, path)
    if "images" in found:
        return _checked_images(found["images"], domain, channels, num_levels, path)
    raise ValueError(f"{path} holds neither `values` nor `images`; expected {SAMPLES_FORMAT}")


def _checked_values(values: np.ndarray, domain: Domain, channels: int, path: Path) -> tuple[torch.Tensor, Domain]:
    if not np.issubdtype(values.dtype, np.floating) or values.ndim != 3 or not len(values) or \
            values.shape[2] != channels:
        hint = " (integer images go in `images` as uint8)" if np.issubdtype(values.dtype, np.integer) else ""
        raise ValueError(f"{path}: `values` is {values.dtype} {values.shape}, the data needs float (N, P, "
                         f"{channels}){hint}; expected {SAMPLES_FORMAT}")
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: `values` holds {int((~np.isfinite(values)).sum())} NaN or infinite entries; "
                         "a sampler that diverged gives no score")
    low, high = float(values.min()), float(values.max())
    if max(-low, high) > VALUES_OVERSHOOT:
        raise ValueError(f"{path}: `values` span [{low:g}, {high:g}], not [-1, 1] (0..255 images go in `images` as "
                         "uint8, or scale them as x / 127.5 - 1)")
    if low >= 0:
        raise ValueError(f"{path}: `values` span [{low:g}, {high:g}], none below 0: [0, 1] data? fields are in "
                         "[-1, 1]: scale them as 2 x - 1")
    side = round(values.shape[1] ** (1 / len(domain.shape)))
    at_file = domain if values.shape[1] == domain.num_points else domain.at_resolution(side)
    if at_file.num_points != values.shape[1]:
        raise ValueError(f"{path}: `values` hold {values.shape[1]} points per field; {domain.name} fields have "
                         f"{domain.num_points} ({list(domain.shape)}) or side^{len(domain.shape)} at another "
                         "resolution")
    return torch.from_numpy(values).float(), at_file


def _checked_images(images: np.ndarray, domain: Domain, channels: int, num_levels: Optional[int], path: Path
                    ) -> tuple[torch.Tensor, Domain]:
    if domain.kind != "grid2d":
        raise ValueError(f"{path} holds `images`, but the data is on a {domain.kind} domain: give `values` "
                         f"(N, P, C) in [-1, 1]")
    if images.ndim == 3 and channels == 1:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{path}: `images` is {images.dtype} {images.shape}, expected uint8 (N, H, W, {channels})")
    at_file = domain if tuple(images.shape[1:3]) == tuple(domain.shape) else domain.at_resolution(images.shape[1:3])
    return images_to_values(images, at_file, channels, num_levels, f"{path}: `images`"), at_file


def field_maker_of(module):
    """The field maker a module was trained with (from its run config), to decode samples; None if unknown."""
    data_cfg = (module.run_config or {}).get("data") or {}
    return instantiate(data_cfg["field_maker"]) if "field_maker" in data_cfg else None
