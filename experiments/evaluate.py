"""Evaluate on the paper metrics: `python experiments/evaluate.py ckpt_path=PATH output_dir=DIR [metrics=[...]]`.

Also scores any tool's samples (`samples=PATH.npz data=NAME`), compares evaluated runs (`compare=[DIR,...]`) and
scores the test renders of evaluated scenes together (`renders=[DIR,...]`: FID / KID, DietNeRF Table 4.1).
Writes DIR/metrics.json and DIR/metrics.md; names carry their feature extractor, e.g. `fid[digits-cnn]`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from evaluation.field_scores import score_generated
from evaluation.protocol import SAMPLE_METRICS, VIEW_METRICS, check_metrics, default_metrics, test_split_metrics
from evaluation.report import compare_runs, read_metrics, save_renders, write_metrics
from evaluation.sample_metrics import score_samples
from evaluation.views import LPIPSVGG, score_views
from lightning_modules.checkpointing import load_method, read_checkpoint
from lightning_modules.runtime import (UsageError, check_counts, instantiate_plainly, register_resolvers,
                                      reports_errors, require, resolve_device)
from lightning_modules.sampling import draw, read_samples, sampler_options, save_samples

log = logging.getLogger("fieldgen.evaluate")
register_resolvers()


def chosen_metrics(requested: Optional[list], domain, capabilities=None, method: str = "") -> list[str]:
    """The requested metrics, checked against what applies (capabilities None: a samples file), or the defaults."""
    if requested is None:
        return default_metrics(domain.kind, capabilities, from_checkpoint=capabilities is not None)
    return check_metrics(list(requested), domain.kind, capabilities, method)


def sample_metrics(cfg: DictConfig, datamodule, metrics: list[str], values: torch.Tensor, domain) -> dict:
    """Image metrics against the data's reference split, or coverage/MMD against its test shapes."""
    return score_generated(values, domain, datamodule, metrics, reference_split=cfg.reference_split,
                           max_reference=cfg.max_reference, extractor=cfg.extractor,
                           extractor_kwargs=cfg.extractor_kwargs, kid_subsets=cfg.kid_subsets,
                           kid_subset_size=cfg.kid_subset_size, is_splits=cfg.is_splits, pr_k=cfg.pr_k, seed=cfg.seed,
                           upsample_to=cfg.upsample_to, surface_points=cfg.surface_points)


def evaluate_checkpoint(cfg: DictConfig) -> None:
    module = load_method(cfg.ckpt_path, use_ema=cfg.use_ema, map_location=resolve_device(cfg.device))
    metrics = chosen_metrics(cfg.metrics, module.domain, module.capabilities, module.method_name)
    data_cfg = cfg.data if cfg.get("data") else OmegaConf.create((module.run_config or {}).get("data"))
    datamodule = instantiate_plainly(data_cfg)
    datamodule.setup("test")
    if cfg.metrics is None and "lpips" in metrics and cfg.lpips_weights is None:
        log.info("lpips skipped: no local VGG16 weights (lpips_weights=PATH)")
        metrics.remove("lpips")
    torch.manual_seed(cfg.seed)
    scores, tables = test_split_metrics(module, datamodule.test_dataloader(), metrics,
                                        module.capabilities.likelihood, cfg.bpd_batches, module.device)
    view_metrics = [name for name in metrics if name in VIEW_METRICS]
    if view_metrics:
        lpips_model = LPIPSVGG(cfg.lpips_weights) if "lpips" in view_metrics else None
        view_scores, renders = score_views(module, datamodule.test_dataloader(), view_metrics, module.device,
                                           lpips_model, cfg.lpips_input)
        scores.update(view_scores)
        save_renders(Path(cfg.output_dir), renders, datamodule.view_names("test"))
    samples_drawn = bool(set(metrics) & set(SAMPLE_METRICS.get(module.domain.kind, ())))
    if samples_drawn:
        values, coords, domain = draw(module, cfg.num_samples, cfg.batch_size, cfg.seed, cfg.resolution,
                                      cfg.progress, **sampler_options(module, cfg.sampler))
        save_samples(Path(cfg.output_dir), values, coords, domain, datamodule.field_maker)
        scores.update(sample_metrics(cfg, datamodule, metrics, values, domain))
    write_metrics(scores, cfg.output_dir, dataset=datamodule.name, tables=tables, checkpoint=str(cfg.ckpt_path),
                  method=module.method_name, num_samples=cfg.num_samples if samples_drawn else 0,
                  use_ema=cfg.use_ema)


def evaluate_samples_file(cfg: DictConfig) -> None:
    if not cfg.get("data"):
        raise ValueError("samples= needs the dataset they are scored against: add data=<name> (e.g. data=digits)")
    datamodule = instantiate_plainly(cfg.data)
    metrics = chosen_metrics(cfg.metrics, datamodule.domain)
    values, domain = read_samples(cfg.samples, datamodule.domain, datamodule.signal_dim)
    scores = sample_metrics(cfg, datamodule, metrics, values, domain)
    write_metrics(scores, cfg.output_dir, dataset=datamodule.name, samples=str(cfg.samples),
                  num_samples=len(values))


def scene_images(data_cfg: dict) -> np.ndarray:
    """uint8 (N, H, W, 3) of every view of every split of a scene run's data, all val / test frames included (the
    reference of DietNeRF's FID / KID: 100 train + 100 val + 200 test views of each Blender scene)."""
    data_cfg = OmegaConf.create(data_cfg)
    source = data_cfg.field_maker.source
    if "test_skip" in source:
        source.test_skip = 1
    field_maker = instantiate_plainly(data_cfg.field_maker)
    return np.concatenate([np.rint(field_maker.views(split).images * 255).astype(np.uint8)
                           for split in ("train", "val", "test")])


def evaluate_render_sets(cfg: DictConfig) -> None:
    """FID / KID of the test renders of evaluated scene runs (`renders=[DIR, ...]`, each an evaluate.py output of one
    scene's checkpoint) against every view of those scenes (DietNeRF Table 4.1: 8 x 25 renders vs 3200 views;
    torch-fidelity's KID subsets of 200 there: kid_subset_size=200)."""
    renders, reference, scenes = [], [], []
    for run_dir in map(Path, cfg.renders):
        record = read_metrics(run_dir)
        pictures = sorted((run_dir / "renders").glob("*.png"))
        if "checkpoint" not in record or not pictures:
            raise ValueError(f"{run_dir} is no evaluated scene run (metrics.json naming its checkpoint, renders/*.png):"
                             " write it with `python experiments/evaluate.py ckpt_path=... output_dir=DIR`")
        data_cfg = (read_checkpoint(record["checkpoint"]).get("fieldgen_config") or {}).get("data")
        if not data_cfg or "scene" not in data_cfg:
            raise ValueError(f"{record['checkpoint']} (of {run_dir}) holds no scene's data config: renders= scores "
                             "runs of scene methods (nerf, dietnerf)")
        renders += [np.asarray(Image.open(path).convert("RGB")) for path in pictures]
        reference.append(scene_images(data_cfg))
        scenes.append(record["dataset"])
    metrics = list(cfg.metrics) if cfg.metrics is not None else ["fid", "kid"]
    reference = np.concatenate(reference)
    renders = np.stack(renders)
    scores = score_samples(renders, scenes[0], metrics, cfg.extractor, reference_images=reference,
                           kid_subsets=cfg.kid_subsets, kid_subset_size=min(cfg.kid_subset_size, len(renders)),
                           seed=cfg.seed, extractor_kwargs=cfg.extractor_kwargs)
    write_metrics(scores, cfg.output_dir, dataset="+".join(scenes), renders=[str(d) for d in cfg.renders],
                  num_renders=len(renders), num_reference=len(reference))


USAGE = ("python experiments/evaluate.py ckpt_path=PATH | samples=PATH.npz data=NAME | compare='[DIR,DIR]' | "
         "renders='[DIR,DIR]' output_dir=DIR")


def check_command(cfg: DictConfig) -> None:
    """The command's values, before anything is loaded."""
    require(cfg, USAGE, "output_dir")
    if isinstance(cfg.compare, str):
        raise UsageError(f"compare={cfg.compare} is one path; give the evaluated run dirs as a list: "
                         f"compare='[{cfg.compare},OTHER_RUN_DIR]'")
    if isinstance(cfg.renders, str):
        raise UsageError(f"renders={cfg.renders} is one path; give the evaluated scene runs as a list: "
                         f"renders='[{cfg.renders},OTHER_RUN_DIR]'")
    if not (cfg.compare or cfg.samples or cfg.renders or cfg.ckpt_path):
        raise UsageError("nothing to evaluate: give ckpt_path=..., samples=... data=..., compare=[...] or "
                         f"renders=[...]; usage: {USAGE}")
    check_counts(cfg, {"num_samples": 1, "batch_size": 1, "bpd_batches": 1, "seed": 0, "kid_subsets": 1,
                       "kid_subset_size": 2, "is_splits": 1, "pr_k": 1, "surface_points": 1})
    resolve_device(cfg.device)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_command(cfg)
    if cfg.compare:
        compare_runs(list(cfg.compare), cfg.output_dir)
    elif cfg.samples:
        evaluate_samples_file(cfg)
    elif cfg.renders:
        evaluate_render_sets(cfg)
    else:
        evaluate_checkpoint(cfg)
    log.info("wrote %s", Path(cfg.output_dir).resolve())


if __name__ == "__main__":
    main()
