"""The one component that draws point subsets (context/query pairs, random fractions) from full fields."""
from __future__ import annotations

from typing import Optional, Union

import torch

from datamodules.fields import FieldBatch

Count = Union[int, float]


class PointSampler:
    """Context and query subsets of each field, drawn uniformly at random and independently per field.

    A count is a number of points (int) or a fraction of the field (float in (0, 1]). Without `replacement` a
    subset has distinct points; `same_points` uses one draw for both sets (the Transformer / MLP-mixer score
    fields pair context token i with query token i).
    """

    def __init__(self, num_context: Count, num_query: Optional[Count] = None, replacement: bool = False,
                 same_points: bool = False):
        self.num_context, self.num_query = num_context, num_context if num_query is None else num_query
        self.replacement, self.same_points = replacement, same_points
        if same_points and self.num_query != self.num_context:
            raise ValueError(f"same_points needs num_context == num_query, got {num_context} and {num_query}")

    def count(self, requested: Count, num_points: int, what: str) -> int:
        """The number of points `requested` means on a field of `num_points`, checked."""
        count = int(round(requested * num_points)) if isinstance(requested, float) else int(requested)
        if isinstance(requested, float) and not 0.0 < requested <= 1.0:
            raise ValueError(f"{what}={requested} as a fraction must be in (0, 1]")
        if count < 1:
            raise ValueError(f"{what}={requested} selects no points of a {num_points}-point field")
        if count > num_points and not self.replacement:
            raise ValueError(
                f"{what}={count} is more points than the field has ({num_points}); lower it, or draw with "
                "replacement by setting method.point_sampler.replacement=true")
        return count

    def check(self, num_points: int) -> None:
        """Raise now (at config time) if the counts cannot be drawn from fields of `num_points` points."""
        self.count(self.num_context, num_points, "num_context")
        self.count(self.num_query, num_points, "num_query")

    def draw(self, batch_size: int, num_points: int, count: int, device: torch.device,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(batch_size, count) long indices into fields of `num_points` points."""
        if self.replacement:
            return torch.randint(0, num_points, (batch_size, count), device=device, generator=generator)
        keys = torch.rand(batch_size, num_points, device=device, generator=generator)
        return keys.topk(count, dim=1, sorted=False).indices

    def __call__(self, batch: FieldBatch, generator: Optional[torch.Generator] = None
                 ) -> tuple[FieldBatch, FieldBatch]:
        num_context = self.count(self.num_context, batch.num_points, "num_context")
        num_query = self.count(self.num_query, batch.num_points, "num_query")
        device = batch.values.device
        context_index = self.draw(batch.batch_size, batch.num_points, num_context, device, generator)
        query_index = context_index if self.same_points else self.draw(
            batch.batch_size, batch.num_points, num_query, device, generator)
        return batch.subset(context_index), batch.subset(query_index)
