"""Likelihood evaluation: the interface every likelihood model implements, bits/dim aggregation, order
ensembles (LMConv) and the DDPM rate-distortion table (Ho et al. 2020, Table 6.2 layout).

A model's `bits_per_dim(batch)` returns per-sample tensors: "total_bpd" (B,), or for a model of several
generation orders "bpd_order/<name>" (B,) per order, whose ensemble `with_order_ensemble` makes the total; a
diffusion model adds its `calc_bpd_loop` terms "prior_bpd" (B,), "vb" (B, T) bits/dim per term (index i = the
paper's L_i: 0 is the decoder -log p(x_0|x_1), i >= 1 the KL of x_i given x_{i+1}), "xstart_mse" (B, T) (mean
squared error on the [-1, 1] scale of the x_0 predicted from x_{i+1}) and "mse" (B, T). Any other (B,) term
(e.g. a conditional NLL "nll_hidden/<region>") is averaged like the total.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Iterable, Mapping

import torch
from torch import Tensor

if TYPE_CHECKING:
    from datamodules.fields import FieldBatch

TOTAL_BPD = "total_bpd"
ORDER_PREFIX = "bpd_order/"
PIXEL_SCALE = 127.5  # [-1, 1] -> [0, 255]: an RMSE on the data scale times this is an RMSE in 8-bit levels


class LikelihoodModel(ABC):
    """What `experiments/evaluate.py` needs from a model to report bits/dim; a method whose capabilities declare
    a likelihood inherits it."""

    @abstractmethod
    def bits_per_dim(self, batch: "FieldBatch") -> dict[str, Tensor]:
        """Per-sample results of one batch (see the module docstring): "total_bpd" (B,) or "bpd_order/<name>"."""


def with_order_ensemble(result: Mapping[str, Tensor], num_dims: int) -> dict[str, Tensor]:
    """`result` with "total_bpd" set to the ensemble of its "bpd_order/<name>" terms (when it has them)."""
    orders = [name for name in result if name.startswith(ORDER_PREFIX)]
    if not orders:
        return dict(result)
    if TOTAL_BPD in result:
        raise KeyError(f"a result holds both '{TOTAL_BPD}' and per-order terms {orders}: the total of a model of "
                       "several orders is their ensemble; return the orders only")
    return {**result, TOTAL_BPD: ensemble_bpd(torch.stack([result[name] for name in orders]), num_dims)}


def concatenate_results(results: Iterable[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per-batch result dicts -> one dict of tensors concatenated over samples (on CPU, float64)."""
    results = list(results)
    if not results:
        raise ValueError("no likelihood results to aggregate: the evaluation loader was empty")
    missing = [i for i, r in enumerate(results) if TOTAL_BPD not in r]
    if missing:
        raise KeyError(f"results of batches {missing} lack '{TOTAL_BPD}'; bits_per_dim must return it per sample")
    return {key: torch.cat([r[key].detach().to("cpu", torch.float64) for r in results]) for key in results[0]}


def aggregate_bpd(results: Iterable[Mapping[str, Tensor]]) -> dict[str, float]:
    """Dataset-level numbers: mean bits/dim with its standard error, the mean of every other per-sample term, and
    for diffusion results the prior, the decoder term L_0 (distortion) and the rate L_1 + ... + L_T in bits/dim."""
    merged = concatenate_results(results)
    total = merged[TOTAL_BPD]
    summary = {"bpd": float(total.mean()),
               "bpd_sem": float(total.std() / math.sqrt(len(total))) if len(total) > 1 else float("nan"),
               "num_samples": len(total)}
    # other per-sample terms (orders, conditional NLLs); the diffusion terms are summarised below
    summary.update({name: float(values.mean()) for name, values in merged.items()
                    if values.dim() == 1 and name not in (TOTAL_BPD, "prior_bpd")})
    if "prior_bpd" in merged:
        summary["prior_bpd"] = float(merged["prior_bpd"].mean())
    if "vb" in merged:
        vb = merged["vb"]
        summary["distortion_bpd"] = float(vb[:, 0].mean())
        summary["rate_bpd"] = float(vb[:, 1:].sum(1).mean() + merged.get("prior_bpd", torch.zeros(1)).mean())
    return summary


def rate_distortion_table(results: Iterable[Mapping[str, Tensor]], num_rows: int = 10) -> list[dict[str, float]]:
    """Rows of (reverse process time T - t + 1, rate, distortion) as in Ho et al. Table 6.2.

    Having decoded down to x_t, the receiver has spent rate(t) = L_T + sum_{i=t}^{T-1} L_i bits/dim, and its best
    guess of x_0 (predicted from x_t) has distortion RMSE(t) on the 0-255 scale (root of the mean squared error
    over all samples and dimensions). Rows are evenly spaced reverse times T, T - T/num_rows, ...
    """
    merged = concatenate_results(results)
    if "vb" not in merged or "xstart_mse" not in merged:
        raise KeyError("rate_distortion_table needs the per-term 'vb' and 'xstart_mse' of calc_bpd_loop, got "
                       f"{sorted(merged)}")
    vb, xstart_mse = merged["vb"].mean(0), merged["xstart_mse"].mean(0)  # (T,)
    num_steps = len(vb)
    prior = merged["prior_bpd"].mean() if "prior_bpd" in merged else torch.zeros((), dtype=torch.float64)
    # tail[t] = sum_{i >= t} L_i for t = 0..T (tail[T] = 0), so rate(t) = L_T + tail[t]
    tail = torch.cat([torch.flip(torch.cumsum(torch.flip(vb, [0]), 0), [0]), vb.new_zeros(1)])
    rows = []
    for k in range(min(num_rows, num_steps)):
        reverse_time = num_steps - (k * num_steps) // num_rows
        t = num_steps - reverse_time + 1  # paper time, 1-based
        rows.append({"reverse_time": reverse_time, "rate_bpd": float(prior + tail[t]),
                     "distortion_rmse": float(xstart_mse[t - 1].sqrt() * PIXEL_SCALE)})
    return rows


def ensemble_bpd(bpd_per_order: Tensor, num_dims: int) -> Tensor:
    """Bits/dim of the mixture that averages the joint probabilities of K orders (Jain et al. 2020).

    bpd_per_order: (K, B) bits/dim of each sample under each order; returns (B,) =
    -(logsumexp_k log p_k(x) - log K) / (num_dims ln 2).
    """
    if bpd_per_order.dim() != 2:
        raise ValueError(f"bpd_per_order must be (K orders, B samples), got {tuple(bpd_per_order.shape)}")
    log_likelihood = -bpd_per_order.double() * num_dims * math.log(2)
    mixture = torch.logsumexp(log_likelihood, 0) - math.log(len(bpd_per_order))
    return -mixture / (num_dims * math.log(2))
