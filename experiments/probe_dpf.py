"""How much a DPF checkpoint uses its context: `python experiments/probe_dpf.py ckpt_path=PATH output_dir=DIR`.

For test fields noised to step t (one noise draw; the context is a random subset of the noisy queries, as when
sampling: Algorithm 2) it reports the x0-MSE of the queries given the right context, an all-zero context and another
field's context (the same coordinates, the other field's noisy values at the same t), per noise level, and for a
PerceiverIO the latent spread ||L - mean L|| / ||L||, the decoder's attention entropy (ln(num_latents) is
uniform) and the encoder's reach (the share of the context one latent reads in the first cross-attention: 1 is
uniform). A network that ignores its context scores the same with all three; the spread of a collapsed latent
array is ~0.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from datamodules.fields import gather_points
from lightning_modules.checkpointing import load_method
from lightning_modules.dpf import DPF
from lightning_modules.runtime import instantiate_plainly, register_resolvers, resolve_device

log = logging.getLogger("fieldgen.probe_dpf")
register_resolvers()
CONTEXTS = ("right", "zero", "other")


@torch.no_grad()
def probe_batch(module: DPF, coords: torch.Tensor, x0: torch.Tensor, other_x0: torch.Tensor, step: int, num_context,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-field x0-MSE under each context (and the latent statistics) at one noise level; other_x0 holds the
    fields whose noisy values make the 'other' context."""
    t = torch.full((x0.shape[0],), step, device=module.device, dtype=torch.long)
    x_t, other_t = (module.diffusion.q_sample(x, t, torch.randn(x.shape, generator=generator).to(module.device))
                    for x in (x0, other_x0))
    index = module.sampling_context_index(x0.shape[0], x0.shape[1], num_context, generator, "the test fields")
    context_coords = gather_points(coords, index)
    contexts = {"right": gather_points(x_t, index), "zero": torch.zeros_like(gather_points(x_t, index)),
                "other": gather_points(other_t, index)}
    results = {}
    for name, context_values in contexts.items():
        def denoise(query_t, mapped_t):
            return module.score_queries(context_coords, context_values, coords, query_t, mapped_t)

        pred_x0 = module.diffusion.p_mean_variance(denoise, x_t, t)["pred_x0"]
        results[f"x0_mse/{name}"] = (pred_x0 - x0).pow(2).flatten(1).mean(1)
    if hasattr(module.net, "latent_statistics"):
        results.update(module.net.latent_statistics(context_coords, contexts["right"], coords, x_t, t))
    return results


def test_fields(datamodule, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` test fields' (coords, values)."""
    coords, values = [], []
    for batch in datamodule.test_dataloader():
        coords.append(batch.coords.expand(batch.values.shape[0], -1, -1))
        values.append(batch.values)
        if sum(len(v) for v in values) >= count:
            break
    return torch.cat(coords)[:count], torch.cat(values)[:count]


def probe(module: DPF, datamodule, cfg: DictConfig) -> dict[str, float]:
    if not isinstance(module, DPF):
        raise ValueError(f"probe_dpf probes DPF checkpoints; {cfg.ckpt_path} is a {type(module).__name__}")
    coords, values = test_fields(datamodule, cfg.num_fields)
    if len(values) < 2:
        raise ValueError(f"num_fields={cfg.num_fields} gives {len(values)} test field(s): the 'other' context needs "
                         f"at least 2 fields")
    coords, values = coords.to(module.device), values.to(module.device)
    others = values.roll(1, dims=0)  # each field's context taken from its neighbour in the test set
    generator = torch.Generator().manual_seed(cfg.seed)
    numbers: dict[str, float] = {}
    for step in cfg.timesteps:
        if not 0 <= step < module.diffusion.num_timesteps:
            raise ValueError(f"timesteps holds {step}, outside the checkpoint's 0..{module.diffusion.num_timesteps - 1}")
        totals: dict[str, list[torch.Tensor]] = {}
        for i in range(0, len(values), cfg.batch_size):
            chunk = slice(i, i + cfg.batch_size)
            for key, value in probe_batch(module, coords[chunk], values[chunk], others[chunk], step,
                                          cfg.num_context, generator).items():
                totals.setdefault(key, []).append(value.cpu())
        for key, per_field in totals.items():
            numbers[f"{key}@t={step}"] = torch.cat(per_field).mean().item()
    if hasattr(module.net, "latents"):
        numbers["uniform_entropy"] = math.log(module.net.latents.shape[0])
    return numbers


@hydra.main(version_base="1.3", config_path="../conf", config_name="probe_dpf")
def main(cfg: DictConfig) -> None:
    module = load_method(cfg.ckpt_path, use_ema=cfg.use_ema, map_location=resolve_device(cfg.device))
    datamodule = instantiate_plainly(OmegaConf.create((module.run_config or {}).get("data")))
    datamodule.setup("test")
    numbers = probe(module, datamodule, cfg)
    for key, value in numbers.items():
        log.info("%-32s %.4f", key, value)
    path = Path(cfg.output_dir) / "probe.json"
    path.write_text(json.dumps(numbers, indent=1))
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
