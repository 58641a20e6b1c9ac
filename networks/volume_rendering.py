"""Volume rendering of a radiance field along rays (NeRF, as the official code): stratified depths, importance
sampling by the coarse weights, and alpha compositing with the last-interval rule."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

Field = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (points, unit dirs) -> (rgb logits, raw density)
LAST_INTERVAL = 1e10  # the official code's length of the interval behind the last sample: it absorbs what is left


def stratified_depths(near: float, far: float, num_rays: int, num_samples: int, perturb: bool,
                      device: torch.device, generator: Optional[torch.Generator] = None) -> Tensor:
    """(num_rays, num_samples) depths: evenly spaced on [near, far], or one uniform draw in each of the bins
    between their midpoints (the official stratified sampling)."""
    depths = torch.linspace(near, far, num_samples, device=device).expand(num_rays, num_samples)
    if not perturb:
        return depths.contiguous()
    mids = 0.5 * (depths[:, 1:] + depths[:, :-1])
    upper, lower = torch.cat([mids, depths[:, -1:]], -1), torch.cat([depths[:, :1], mids], -1)
    return lower + (upper - lower) * torch.rand(depths.shape, device=device, generator=generator)


def composite(rgb_logits: Tensor, raw_density: Tensor, depths: Tensor, directions: Tensor,
              white_background: bool, density_noise_std: float = 0.0) -> dict[str, Tensor]:
    """Alpha compositing of samples (R, S) at `depths` along rays with (unnormalised) `directions` (R, 3):
    alpha_i = 1 - exp(-relu(sigma_i) delta_i |d|), weights w_i = alpha_i prod_{j<i} (1 - alpha_j); the last delta is
    LAST_INTERVAL. Returns rgb (R, 3) (plus 1 - acc on white), depth and acc (R, 1), weights (R, S)."""
    deltas = torch.cat([depths[:, 1:] - depths[:, :-1], torch.full_like(depths[:, :1], LAST_INTERVAL)], -1)
    deltas = deltas * directions.norm(dim=-1, keepdim=True)
    density = raw_density[..., 0]
    if density_noise_std > 0:
        density = density + torch.randn_like(density) * density_noise_std
    alpha = 1 - torch.exp(-F.relu(density) * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * transmittance
    rgb = (weights[..., None] * torch.sigmoid(rgb_logits)).sum(1)
    acc = weights.sum(1, keepdim=True)
    if white_background:
        rgb = rgb + (1 - acc)
    return {"rgb": rgb, "depth": (weights * depths).sum(1, keepdim=True), "acc": acc, "weights": weights}


def sample_pdf(bins: Tensor, weights: Tensor, num_samples: int, deterministic: bool,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """(R, num_samples) depths drawn from the piecewise-constant pdf with `weights` (R, B) on the bins whose edges
    are `bins` (R, B + 1), by inverting its cdf (at evenly spaced quantiles when `deterministic`); as the official
    code, 1e-5 is added to every weight (an all-zero pdf is uniform)."""
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (R, B + 1)
    if deterministic:
        u = torch.linspace(0, 1, num_samples, device=bins.device).expand(len(bins), num_samples).contiguous()
    else:
        u = torch.rand(len(bins), num_samples, device=bins.device, generator=generator)
    index = torch.searchsorted(cdf, u, right=True)
    below, above = (index - 1).clamp(min=0), index.clamp(max=cdf.shape[-1] - 1)
    cdf_low, cdf_high = cdf.gather(1, below), cdf.gather(1, above)
    bin_low, bin_high = bins.gather(1, below), bins.gather(1, above)
    denominator = torch.where(cdf_high - cdf_low < 1e-5, torch.ones_like(cdf_low), cdf_high - cdf_low)
    return bin_low + (u - cdf_low) / denominator * (bin_high - bin_low)


def render_rays(rays: Tensor, coarse: Field, fine: Optional[Field], near: float, far: float, num_coarse: int,
                num_fine: int, perturb: bool, white_background: bool, density_noise_std: float = 0.0
                ) -> dict[str, dict[str, Tensor]]:
    """Rays (R, 6) (origin, direction) -> {"coarse": ..., "fine": ...} outputs of `composite` (without "fine" when
    num_fine is 0): the coarse field at stratified depths, the fine one at those plus num_fine depths importance-
    sampled from the coarse weights (detached, as the official code)."""
    origins, directions = rays[:, :3], rays[:, 3:]
    unit = directions / directions.norm(dim=-1, keepdim=True)

    def evaluate(field: Field, depths: Tensor) -> dict[str, Tensor]:
        points = origins[:, None] + depths[..., None] * directions[:, None]
        rgb_logits, raw_density = field(points, unit[:, None].expand_as(points))
        return composite(rgb_logits, raw_density, depths, directions, white_background,
                         density_noise_std if perturb else 0.0)

    depths = stratified_depths(near, far, len(rays), num_coarse, perturb, rays.device)
    out = {"coarse": evaluate(coarse, depths)}
    if num_fine > 0:
        mids = 0.5 * (depths[:, 1:] + depths[:, :-1])
        extra = sample_pdf(mids, out["coarse"]["weights"][:, 1:-1].detach(), num_fine, deterministic=not perturb)
        out["fine"] = evaluate(fine, torch.sort(torch.cat([depths, extra.detach()], -1), -1).values)
    return out
