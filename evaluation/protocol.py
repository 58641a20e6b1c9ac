"""What a model is scored on: metrics chosen by the domain kind and by the capabilities its method declares.

A method declares `Capabilities`; this module turns them into metric names, refuses a metric that cannot apply
before any sampling starts, and computes the test-split metrics through the interfaces evaluation defines:
`compute_losses(batch)` (every method), `LikelihoodModel.bits_per_dim(batch)` and `ViewRenderer.render_views`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch

from datamodules.fields import DOMAIN_KINDS
from evaluation.likelihood import LikelihoodModel, aggregate_bpd, rate_distortion_table, with_order_ensemble
from evaluation.sample_metrics import METRICS as IMAGE_METRICS

LIKELIHOODS = ("bound", "exact")  # a variational bound on -log p (DDPM) or -log p itself (autoregressive)
VIEW_METRICS = ("psnr", "ssim", "lpips")
# metrics of generated fields, by the domain kind they are defined on (sphere: projected images, read back on the
# image plane)
SAMPLE_METRICS = {"grid2d": IMAGE_METRICS, "grid3d": ("coverage_mmd",), "sphere": IMAGE_METRICS}
METRICS = ("loss", "bpd", *IMAGE_METRICS, "coverage_mmd", *VIEW_METRICS)


class MetricNotApplicableError(ValueError):
    """A requested metric does not apply to this model or data (raised before any sampling)."""


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; error messages, the README's methods x domains table and the metrics derive from it.

    domains: the DOMAIN_KINDS it trains on. resolution_free: samples at resolutions other than the training
    one. likelihood: None, "bound" or "exact" (the method is then a LikelihoodModel). completion: completes
    partly observed fields (`complete`). renders_views: renders posed views (a ViewRenderer). orders: generates
    in any order of the points (`sample(order=...)`).
    """

    domains: tuple[str, ...]
    resolution_free: bool = False
    likelihood: Optional[str] = None
    completion: bool = False
    renders_views: bool = False
    orders: bool = False

    def __post_init__(self):
        object.__setattr__(self, "domains", tuple(self.domains))
        unknown = sorted(set(self.domains) - set(DOMAIN_KINDS))
        if unknown or not self.domains:
            raise ValueError(f"Capabilities.domains must be a non-empty subset of {list(DOMAIN_KINDS)}, "
                             f"got {list(self.domains)}")
        if self.likelihood not in (None, *LIKELIHOODS):
            raise ValueError(f"Capabilities.likelihood must be None or one of {LIKELIHOODS}, got {self.likelihood!r}")


def default_metrics(domain_kind: str, capabilities: Optional[Capabilities], from_checkpoint: bool) -> list[str]:
    """What a checkpoint (or, with from_checkpoint=False, a samples file) is scored on by default."""
    chosen = []
    if from_checkpoint:
        chosen.append("loss")
        if capabilities.likelihood:
            chosen.append("bpd")
        if capabilities.renders_views:
            return chosen + list(VIEW_METRICS)
    return chosen + list(SAMPLE_METRICS.get(domain_kind, ()))


def check_metrics(requested: Sequence[str], domain_kind: str, capabilities: Optional[Capabilities],
                  method: str = "") -> list[str]:
    """`requested` as a list, or MetricNotApplicableError naming why one cannot be computed here and what can.

    capabilities None: scoring a samples file, where only the metrics of generated fields apply."""
    if isinstance(requested, str) or not all(isinstance(name, str) for name in requested):
        raise ValueError(f"metrics must be a list of names, e.g. metrics=[fid,kid]; got {requested!r}")
    unknown = sorted(set(requested) - set(METRICS))
    if unknown or not requested:
        raise ValueError(f"unknown metrics {unknown or '(none given)'}; valid: {', '.join(METRICS)}")
    possible = default_metrics(domain_kind, capabilities, capabilities is not None)
    for name in requested:
        if name in possible:
            continue
        if name in ("loss", "bpd") and capabilities is None:
            reason = f"{name} needs the model: evaluate a checkpoint (ckpt_path=...), not a samples file"
        elif name == "bpd":
            reason = (f"bits/dim need a method with a likelihood (a bound or an exact one); method '{method}' "
                      "declares none")
        elif name in VIEW_METRICS:
            reason = f"{name} scores rendered views; method '{method}' does not render views"
        else:
            on = [kind for kind, names in SAMPLE_METRICS.items() if name in names]
            reason = f"{name} scores {' / '.join(DOMAIN_KINDS[kind] for kind in on)} fields, not {domain_kind}"
        raise MetricNotApplicableError(f"{reason}; metrics that apply here: {', '.join(possible) or 'none'}")
    return list(requested)


@torch.no_grad()
def test_split_metrics(model, batches: Iterable, metrics: Sequence[str], likelihood: Optional[str],
                       bpd_batches: int, device) -> tuple[dict[str, float], dict[str, list]]:
    """Mean test loss over `batches`, and the likelihood over the first `bpd_batches` of them:
    `test/bpd` (a model of several orders: their ensemble), every other per-sample term as `test/<term>`, and
    for a bound the rate-distortion table."""
    if "bpd" in metrics and not isinstance(model, LikelihoodModel):
        raise MetricNotApplicableError(f"{type(model).__name__} declares a likelihood but is no LikelihoodModel")
    scores, tables, losses, results = {}, {}, [], []
    for i, batch in enumerate(batches):
        if "loss" not in metrics and i >= bpd_batches:
            break
        batch = batch.to(device)
        if "loss" in metrics:
            losses.append(model.compute_losses(batch)["loss"].cpu())
        if "bpd" in metrics and i < bpd_batches:
            num_dims = batch.values[0].numel()
            results.append(with_order_ensemble({k: v.cpu() for k, v in model.bits_per_dim(batch).items()}, num_dims))
    if losses:
        scores["test/loss"] = float(torch.cat(losses).mean())
    if results:
        scores.update({f"test/{name}": value for name, value in aggregate_bpd(results).items()})
        if likelihood == "bound":
            tables["rate_distortion"] = rate_distortion_table(results)
    return scores, tables
