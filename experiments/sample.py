"""Draw fields from a checkpoint: `python experiments/sample.py ckpt_path=PATH num_samples=N output_dir=DIR`.

Writes DIR/samples.npz (`values` (N, P, C) in [-1, 1], `coords` (P, Dm) shared by every sample, `domain` spec;
`images` uint8 (N, H, W, C) for 2-D grid domains, `raw` in the data's own units otherwise) and DIR/samples.png.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from datamodules.render import render_fields
from lightning_modules.checkpointing import load_method
from lightning_modules.runtime import register_resolvers

log = logging.getLogger("fieldgen.sample")
register_resolvers()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def draw(module, num_samples: int, batch_size: int, seed: int, resolution=None, progress: bool = False,
         **sampler) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (N, P, C), coords (P, Dm)) from `num_samples` fields drawn in batches from one seeded generator."""
    generator = torch.Generator(device=module.device).manual_seed(seed)
    chunks, coords = [], None
    for start in range(0, num_samples, batch_size):
        fields = module.sample(min(batch_size, num_samples - start), generator=generator, resolution=resolution,
                               progress=progress, **sampler)
        chunks.append(fields.values.float().cpu())
        coords = fields.coords[0].cpu()
        log.info("sampled %d / %d", start + len(chunks[-1]), num_samples)
    return torch.cat(chunks), coords


def save_samples(output_dir: Path, values: torch.Tensor, coords: torch.Tensor, domain, field_maker=None) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"values": values.numpy(), "coords": coords.numpy(), "domain": np.array(json.dumps(domain.spec()))}
    if field_maker is not None:
        raw = field_maker.to_raw(values.numpy())
        arrays["images" if domain.is_grid and len(domain.shape) == 2 else "raw"] = raw
    np.savez_compressed(output_dir / "samples.npz", **arrays)
    render_fields(values[:64], domain, nrow=int(math.ceil(math.sqrt(min(64, len(values)))))).save(
        output_dir / "samples.png")


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    module = load_method(cfg.ckpt_path, use_ema=cfg.use_ema, map_location=resolve_device(cfg.device))
    domain = module.domain if cfg.resolution is None else module.domain.at_resolution(cfg.resolution)
    values, coords = draw(module, cfg.num_samples, cfg.batch_size, cfg.seed, cfg.resolution, cfg.progress,
                          **cfg.sampler)
    data_cfg = (module.run_config or {}).get("data", {})
    field_maker = instantiate(data_cfg["field_maker"]) if "field_maker" in data_cfg else None
    if field_maker is not None and cfg.resolution is not None:
        field_maker = field_maker.at_resolution(cfg.resolution)
    save_samples(Path(cfg.output_dir), values, coords, domain, field_maker)
    log.info("wrote %s/samples.npz and samples.png", cfg.output_dir)


if __name__ == "__main__":
    main()
