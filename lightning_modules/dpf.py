"""Diffusion Probabilistic Fields (Zhuang et al. 2023): a score field over context/query pairs on any domain."""
from __future__ import annotations

from typing import Optional, Union

import torch
from hydra.utils import instantiate

from datamodules.fields import FieldBatch, Grid, canonical_coords, gather_points
from datamodules.points import ContextQuerySampler, PointSubset
from evaluation.protocol import Capabilities
from lightning_modules.diffusion_method import DiffusionMethod
from networks.score_fields.tokens import PairedScoreField

OVERLAP_NOISE = ("shared", "independent")

class DPF(DiffusionMethod):
    """Training is the paper's Algorithm 1, sampling its Algorithm 2, on query points at any resolution.

    net: a score field `net(context_coords, context_values, query_coords, query_values, t) -> eps` (PerceiverIO,
        Transformer encoder or MLP-mixer); its coord_dim, signal_dim and output size come from the data.
    point_sampler: ContextQuerySampler arguments for training (num_context, num_query, replacement, same_points).
    overlap_noise: "shared" draws one noise per field point, read by both sets, so a point drawn as context and
        query has one noisy value, as at sampling, where the context values are the query values (apple/ml-mcf
        does the same); "independent" is the literal Algorithm 1 (eps_c and eps_q drawn separately), under which
        a network can lower its loss by averaging each query with its independently noised copy in the context.
    sampling_context: context points at sampling time (a random subset of the queries, fixed for the chain);
        null = min(training context count, number of queries); "all" = every query, at any resolution (a model
        trained with the whole field as context then sees every query in it at a finer grid too, as in training).
    query_chunk_size: score this many queries at a time when sampling (memory; queries do not interact); PerceiverIO
        only (the paired backbones encode every query with every other).
    coordinate_jitter: train on the continuous field between grid points (Grid domains): each training field is
        re-read by linear interpolation at its grid shifted by a uniform random offset of up to this many cells
        per axis (0.5 reaches every sub-cell phase, which sampling at a finer resolution queries); 0 = off.
    coordinate_jitter_share: the share of training fields that are jittered; the rest are read at the grid points,
        where samples at the training resolution are drawn (jittering every field softens those samples).
    """

    method_name = "dpf"
    capabilities = Capabilities(domains=("grid2d", "grid3d", "sphere", "latlon"), resolution_free=True)
    channel_dim = -1

    def __init__(self, net: dict, point_sampler: dict, overlap_noise: str = "shared",
                 sampling_context: Union[int, str, None] = None, query_chunk_size: Optional[int] = None,
                 coordinate_jitter: float = 0.0, coordinate_jitter_share: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        net = dict(net)
        if net.get("coord_dim") not in (None, self.domain.coord_dim):
            raise ValueError(
                f"method.net.coord_dim={net['coord_dim']} does not match the {self.domain.name} domain's "
                f"{self.domain.coord_dim}-D coordinates; remove it (it is read from the data) or use matching data")
        net.update(coord_dim=self.domain.coord_dim, signal_dim=self.signal_dim, out_dim=self.out_channels,
                   num_timesteps=self.diffusion.num_timesteps)
        net.setdefault("coord_max_resolution", max(self.domain.shape))
        self.net = instantiate(net)
        self.point_sampler = ContextQuerySampler(**point_sampler)
        self.point_sampler.check(self.domain.num_points)
        if overlap_noise not in OVERLAP_NOISE:
            raise ValueError(f"method.overlap_noise={overlap_noise!r} is not one of {OVERLAP_NOISE}")
        self.overlap_noise = overlap_noise
        if query_chunk_size is not None and (not isinstance(query_chunk_size, int) or query_chunk_size < 1):
            raise ValueError(f"method.query_chunk_size must be a positive number of queries or null (all at once), "
                             f"got {query_chunk_size!r}")
        if query_chunk_size is not None and isinstance(self.net, PairedScoreField):
            raise ValueError(
                f"method.query_chunk_size={query_chunk_size} cannot split the queries of {type(self.net).__name__}: "
                f"it pairs query i with context token i and encodes all of them together, so a chunk of queries "
                f"has no context of its own; set method.query_chunk_size=null, or use PerceiverIO to chunk")
        if not (sampling_context in (None, "all") or isinstance(sampling_context, int) and sampling_context > 0):
            raise ValueError(f"method.sampling_context must be a positive number of points, 'all' (every query) or "
                             f"null (the training count), got {sampling_context!r}")
        self.sampling_context, self.query_chunk_size = sampling_context, query_chunk_size
        if coordinate_jitter and not isinstance(self.domain, Grid):
            raise ValueError(f"coordinate_jitter interpolates between grid points, but the data's domain is "
                             f"{self.domain.name}; set method.coordinate_jitter=0 or use grid data")
        if not 0.0 <= coordinate_jitter <= 0.5:
            raise ValueError(f"coordinate_jitter is a shift in grid cells in [0, 0.5], got {coordinate_jitter}")
        if not 0.0 < coordinate_jitter_share <= 1.0:
            raise ValueError(f"coordinate_jitter_share is the share of training fields jittered, in (0, 1]; got "
                             f"{coordinate_jitter_share} (coordinate_jitter=0 turns jitter off)")
        self.coordinate_jitter, self.coordinate_jitter_share = coordinate_jitter, coordinate_jitter_share

    def jittered(self, batch: FieldBatch) -> FieldBatch:
        """Full fields re-read at their grid shifted by a random offset per field (see coordinate_jitter)."""
        cells = torch.tensor(self.domain.shape, device=batch.coords.device, dtype=batch.coords.dtype)
        offset = (torch.rand(batch.batch_size, 1, self.domain.coord_dim, device=batch.coords.device) * 2 - 1)
        if self.coordinate_jitter_share < 1.0:  # the other fields keep offset 0: read at their grid points
            offset = offset * (torch.rand(batch.batch_size, 1, 1, device=offset.device) < self.coordinate_jitter_share)
        coords = batch.coords + offset * self.coordinate_jitter * 2 / cells  # a cell is 2 / n wide
        return FieldBatch(coords, self.domain.interpolate(batch.to_dense(), coords), self.domain)

    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        if self.coordinate_jitter:
            batch = self.jittered(batch)
        context, query = self.point_sampler(batch)
        t = self.sample_timesteps(batch.batch_size)
        if self.overlap_noise == "shared":
            noise = torch.randn_like(batch.values)  # one draw per field point, read by both sets
            context_noise, query_noise = gather_points(noise, context.index), gather_points(noise, query.index)
        else:
            context_noise, query_noise = torch.randn_like(context.values), torch.randn_like(query.values)
        context_t = self.diffusion.q_sample(context.values, t, context_noise)

        def denoise(query_t: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            return self.net(context.coords, context_t, query.coords, query_t, step)

        # the loss is on the query noise only (Algorithm 1, line 8)
        return self.diffusion.training_losses(denoise, query.values, t, noise=query_noise)

    def score_queries(self, context_coords, context_values, query_coords, query_values, t) -> torch.Tensor:
        """The score field on the queries, in chunks when asked (queries do not interact, so chunks are exact)."""
        size = self.query_chunk_size or query_coords.shape[1]
        return torch.cat([self.net(context_coords, context_values, query_coords[:, i:i + size],
                                   query_values[:, i:i + size], t)
                          for i in range(0, query_coords.shape[1], size)], dim=1)

    def sampling_context_index(self, num_samples: int, num_queries: int, num_context: Optional[int] = None,
                               generator: Optional[torch.Generator] = None, where: str = "") -> torch.Tensor:
        """(num_samples, k) indices of the context among the queries at sampling time (Algorithm 2, line 2)."""
        requested = num_context or self.sampling_context
        # paired backbones read every query as its own context; "all" asks for the same of any backbone
        if self.point_sampler.same_points or requested == "all":
            return torch.arange(num_queries, device=self.device).expand(num_samples, -1)
        requested = requested or min(self.point_sampler.context.count_for(self.domain.num_points), num_queries)
        if requested > num_queries:
            raise ValueError(f"num_context={requested} exceeds the {num_queries} query points at {where}; the "
                             f"context is a subset of the queries")
        return PointSubset(requested, name="num_context").draw(num_samples, num_queries, self.device, generator)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False, num_context: Optional[int] = None, **sampler_overrides) -> FieldBatch:
        """Algorithm 2 on the domain's coordinates at `resolution` (any resolution; default the training one)."""
        domain = self.sampling_domain(resolution)
        query_coords = canonical_coords(domain).to(self.device).expand(num_samples, -1, -1)
        num_queries = query_coords.shape[1]
        context_index = self.sampling_context_index(num_samples, num_queries, num_context, generator,
                                                    f"resolution {list(domain.shape)}")
        context_coords = gather_points(query_coords, context_index)

        def denoise(query_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # the context is re-read from the current query values at every step (Algorithm 2, line 7)
            return self.score_queries(context_coords, gather_points(query_t, context_index), query_coords,
                                      query_t, t)

        values = self.run_sampler(denoise, (num_samples, num_queries, self.signal_dim), generator=generator,
                                  progress=progress, **sampler_overrides)
        return FieldBatch(coords=query_coords, values=values, domain=domain)
