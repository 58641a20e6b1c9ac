"""Draw fields from a checkpoint: `python experiments/sample.py ckpt_path=PATH num_samples=N output_dir=DIR`.

Writes DIR/samples.npz (format in lightning_modules/sampling.py) and DIR/samples.png, with the EMA weights unless
use_ema=false; `resolution=R` samples a resolution-free method at another resolution, `order=NAME` generates in
that order (methods with orders), `mesh=true` adds a marching-cubes render per voxel field to samples.png, and
`complete.images=PATH.npz complete.hidden=REGION` completes the images of a samples file whose REGION is hidden
(methods that complete fields).
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lightning_modules.checkpointing import load_method
from lightning_modules.runtime import check_counts, register_resolvers, reports_errors, require, resolve_device
from lightning_modules.sampling import (check_mesh_domain, complete, draw, field_maker_of, hidden_region, read_samples,
                                        sampler_options, save_samples)

log = logging.getLogger("fieldgen.sample")
register_resolvers()


USAGE = "python experiments/sample.py ckpt_path=<run dir>/checkpoints/last.ckpt num_samples=64 output_dir=DIR"


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
@reports_errors
def main(cfg: DictConfig) -> None:
    require(cfg, USAGE, "ckpt_path", "output_dir")
    check_counts(cfg, {"num_samples": 1, "batch_size": 1, "seed": 0})
    device = resolve_device(cfg.device)
    module = load_method(cfg.ckpt_path, use_ema=cfg.use_ema, map_location=device)
    options = sampler_options(module, cfg.sampler, cfg.order)
    if cfg.mesh:
        check_mesh_domain(module.domain)  # before sampling, not after it
    if cfg.complete.images:
        observed = ~hidden_region(module.domain, cfg.complete.hidden)
        values, domain = read_samples(cfg.complete.images, module.domain, module.signal_dim, module.num_levels,
                                      prefer_images=True)
        if domain != module.domain:
            raise ValueError(f"complete.images={cfg.complete.images} holds {list(domain.shape)} fields; this model "
                             f"completes {list(module.domain.shape)}")
        values = complete(module, values, observed, cfg.batch_size, cfg.seed, cfg.progress, **options)
        coords, domain = module.domain.coords(), module.domain
    else:
        values, coords, domain = draw(module, cfg.num_samples, cfg.batch_size, cfg.seed, cfg.resolution,
                                      cfg.progress, **options)
    path = save_samples(Path(cfg.output_dir), values, coords, domain, field_maker_of(module), cfg.mesh)
    log.info("wrote %s and samples.png", path)


if __name__ == "__main__":
    main()
