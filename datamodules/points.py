"""The one component that draws point subsets from full fields: a random subset per field (∞-Diff's pixel
fractions, NeRF's ray batches) and DPF's context/query pairs built from two of them.

A count is a number of points (int) or a fraction of the field (float in (0, 1]). Draws are uniform and
independent per field, and cost O(k) for k points whatever the field's size (a NeRF scene has millions of rays).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from datamodules.fields import FieldBatch

Count = Union[int, float]


def draw_distinct(batch_size: int, num_points: int, count: int, device: torch.device,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """(batch_size, count) indices, each row `count` distinct points of range(num_points) uniformly at random,
    in random order."""
    if 2 * count > num_points:  # dense: one random key per point is O(num_points) = O(count)
        keys = torch.rand(batch_size, num_points, device=device, generator=generator)
        return keys.topk(count, dim=1, sorted=True).indices  # sorted by random keys: a random order
    # sparse: draw with replacement and keep each row's first `count` distinct values in draw order, a uniform
    # random subset; 2k draws hold >= 1.26k distinct values on average, so a redraw is rare
    draws = 2 * count + 16
    while True:
        index = first_distinct(torch.randint(0, num_points, (batch_size, draws), device=device, generator=generator),
                               count)
        if index is not None:
            return index
        draws *= 2


def first_distinct(index: Tensor, count: int) -> Optional[Tensor]:
    """(B, count): each row's first `count` distinct values of `index` (B, n), in order; None if a row has fewer."""
    values, order = index.sort(dim=1, stable=True)  # stable: the earliest draw of a value sorts first
    first_in_sorted = torch.ones_like(values, dtype=torch.bool)
    first_in_sorted[:, 1:] = values[:, 1:] != values[:, :-1]
    first = torch.zeros_like(first_in_sorted).scatter_(1, order, first_in_sorted)  # back in draw order
    if not bool((first.sum(1) >= count).all()):
        return None
    keep = first & (first.cumsum(1) <= count)
    return index[keep].view(index.shape[0], count)


def radical_inverse(n: Tensor, base: int) -> Tensor:
    """The van der Corput radical inverse of integers n >= 0 in `base` (float64): digits mirrored about the point."""
    n = n.clone()
    result = torch.zeros(n.shape, dtype=torch.float64, device=n.device)
    scale = 1.0 / base
    while bool((n > 0).any()):  # one pass per digit: log_base(max n) passes
        result += scale * (n % base)
        n = n // base
        scale /= base
    return result


class PointSubset:
    """`count` points of each field, drawn uniformly at random (distinct unless `replacement`).

    name: the config key of `count`, for error messages (e.g. "method.point_subset.count").
    """

    def __init__(self, count: Count, replacement: bool = False, name: str = "count"):
        if isinstance(count, bool) or not isinstance(count, (int, float)):
            raise ValueError(f"{name}={count!r} must be a number of points (int) or a fraction in (0, 1] (float)")
        if isinstance(count, float) and not 0.0 < count <= 1.0:
            raise ValueError(f"{name}={count} as a fraction of the field must be in (0, 1]")
        self.count, self.replacement, self.name = count, replacement, name

    def count_for(self, num_points: int) -> int:
        """The number of points `count` means on a field of `num_points`, checked."""
        count = int(round(self.count * num_points)) if isinstance(self.count, float) else int(self.count)
        if count < 1:
            raise ValueError(f"{self.name}={self.count} selects no points of a {num_points}-point field; raise it")
        if count > num_points and not self.replacement:
            raise ValueError(
                f"{self.name}={count} is more points than the field has ({num_points}); lower it, or draw with "
                f"replacement by setting {self.name.rsplit('.', 1)[0]}.replacement=true")
        return count

    def draw(self, batch_size: int, num_points: int, device: torch.device, generator: Optional[torch.Generator] = None,
             candidates: Optional[Tensor] = None) -> Tensor:
        """(batch_size, k) long indices into fields of `num_points` points; with `candidates` (batch_size, M)
        they are drawn from those indices only (k counts a fraction of M then)."""
        pool = num_points if candidates is None else candidates.shape[1]
        count = self.count_for(pool)
        if self.replacement:
            index = torch.randint(0, pool, (batch_size, count), device=device, generator=generator)
        else:
            index = draw_distinct(batch_size, pool, count, device, generator)
        return index if candidates is None else torch.gather(candidates.to(device), 1, index)

    def __call__(self, batch: FieldBatch, generator: Optional[torch.Generator] = None,
                 candidates: Optional[Tensor] = None) -> FieldBatch:
        return batch.subset(self.draw(batch.batch_size, batch.num_points, batch.values.device, generator, candidates))


class HaltonSubset(PointSubset):
    """`count` distinct cells of each field on a 2-D lattice `shape` drawn by randomised quasi-Monte Carlo (∞-Diff's
    Table 2 ablation): the 2-D Halton sequence (bases 2, 3) from a random start, shifted by a random offset per
    field (Cranley-Patterson rotation), mapped to the cells it falls in, repeats skipped (the official code keeps
    them)."""

    def __init__(self, count: Count, shape: tuple[int, int], name: str = "count"):
        super().__init__(count, replacement=False, name=name)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"Halton subsets are drawn on 2-D lattices; got a lattice of shape {tuple(shape)}")
        self.shape = (int(shape[0]), int(shape[1]))

    def draw(self, batch_size: int, num_points: int, device: torch.device, generator: Optional[torch.Generator] = None,
             candidates: Optional[Tensor] = None) -> Tensor:
        if candidates is not None or num_points != self.shape[0] * self.shape[1]:
            raise ValueError(f"{self.name}: Halton subsets cover the whole {self.shape[0]}x{self.shape[1]} lattice; "
                             f"got {num_points} points{' and candidates' if candidates is not None else ''}")
        count = self.count_for(num_points)
        start = torch.randint(0, 1 << 20, (batch_size, 1), device=device, generator=generator)
        shift = torch.rand(batch_size, 1, 2, device=device, generator=generator, dtype=torch.float64)
        length = 2 * count + 16
        while True:
            n = start + torch.arange(length, device=device)
            unit = (torch.stack([radical_inverse(n, 2), radical_inverse(n, 3)], dim=-1) + shift) % 1.0
            rows = (unit[..., 0] * self.shape[0]).long().clamp(max=self.shape[0] - 1)
            cols = (unit[..., 1] * self.shape[1]).long().clamp(max=self.shape[1] - 1)
            index = first_distinct(rows * self.shape[1] + cols, count)
            if index is not None:
                return index
            length *= 2


class ContextQuerySampler:
    """DPF's context and query subsets of each field (Zhuang et al. Algorithm 1); `same_points` uses one draw for
    both sets (the Transformer / MLP-mixer score fields pair context token i with query token i)."""

    def __init__(self, num_context: Count, num_query: Optional[Count] = None, replacement: bool = False,
                 same_points: bool = False):
        num_query = num_context if num_query is None else num_query
        if same_points and num_query != num_context:
            raise ValueError(f"same_points needs num_context == num_query, got {num_context} and {num_query}")
        self.context = PointSubset(num_context, replacement, "method.point_sampler.num_context")
        self.query = PointSubset(num_query, replacement, "method.point_sampler.num_query")
        self.same_points = same_points

    def check(self, num_points: int) -> None:
        """Raise now (at config time) if the counts cannot be drawn from fields of `num_points` points."""
        self.context.count_for(num_points)
        self.query.count_for(num_points)

    def __call__(self, batch: FieldBatch, generator: Optional[torch.Generator] = None
                 ) -> tuple[FieldBatch, FieldBatch]:
        context = self.context(batch, generator)
        return context, (context if self.same_points else self.query(batch, generator))
