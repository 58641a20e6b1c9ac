"""Pixel generation orders of an H x W image (Jain et al. 2020, Sec. 2.4 and App. 5.1).

An order is a LongTensor `order` (H*W,) whose entry i is the row-major index of the pixel generated at step i; its
inverse, `rank` (H*W,), is the step at which each pixel is generated. Named orders are "<base>_<variant>": a base
curve (raster, s_curve, hilbert, gilbert, center_quarter_last) and one of its 8 dihedral variants, numbered as in
the authors' code: 0 identity, 1 reflect rows (r -> H-1-r), 2 reflect cols, 3 both, 4 transpose, 5-7 the
transpose followed by reflections 1-3. A bare "<base>" names all 8 variants.
"""
from __future__ import annotations

import re
from typing import Iterator, Sequence

import torch

BASE_ORDERS = ("raster", "s_curve", "hilbert", "gilbert", "center_quarter_last")
NUM_VARIANTS = 8


def _raster(height: int, width: int) -> list[tuple[int, int]]:
    return [(r, c) for r in range(height) for c in range(width)]


def _s_curve(height: int, width: int) -> list[tuple[int, int]]:
    """Rows in alternating directions (a Hamiltonian path: consecutive pixels are neighbours)."""
    return [(r, c if r % 2 == 0 else width - 1 - c) for r in range(height) for c in range(width)]


def _hilbert(height: int, width: int) -> list[tuple[int, int]]:
    """The classic Hilbert curve of a 2^n x 2^n image (the d -> (x, y) conversion of Hilbert's construction)."""
    side = height
    if height != width or side & (side - 1):
        raise ValueError(f"the classic Hilbert curve needs a square image whose side is a power of two, got "
                         f"{height}x{width}; use the generalised curve (order gilbert) for other sizes")
    cells = []
    for d in range(side * side):
        x = y = 0
        t, s = d, 1
        while s < side:
            rx, ry = 1 & (t // 2), 1 & (t ^ (1 & (t // 2)))
            if ry == 0:
                if rx == 1:
                    x, y = s - 1 - x, s - 1 - y
                x, y = y, x
            x, y, t, s = x + s * rx, y + s * ry, t // 4, s * 2
        cells.append((y, x))
    return cells


def _gilbert_segment(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """Červený's generalised Hilbert curve over the rectangle spanned by (ax, ay) and (bx, by) from (x, y)."""
    width, height = abs(ax + ay), abs(bx + by)
    dax, day = (ax > 0) - (ax < 0), (ay > 0) - (ay < 0)
    dbx, dby = (bx > 0) - (bx < 0), (by > 0) - (by < 0)
    if height == 1:
        for i in range(width):
            yield x + i * dax, y + i * day
        return
    if width == 1:
        for i in range(height):
            yield x + i * dbx, y + i * dby
        return
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    if 2 * width > 3 * height:
        if abs(ax2 + ay2) % 2 and width > 2:  # prefer an even first half, so the curve keeps unit steps
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _gilbert_segment(x, y, ax2, ay2, bx, by)
        yield from _gilbert_segment(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
    else:
        if abs(bx2 + by2) % 2 and height > 2:
            bx2, by2 = bx2 + dbx, by2 + dby
        yield from _gilbert_segment(x, y, bx2, by2, ax2, ay2)
        yield from _gilbert_segment(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
        yield from _gilbert_segment(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), -bx2, -by2,
                                    -(ax - ax2), -(ay - ay2))


def _gilbert(height: int, width: int) -> list[tuple[int, int]]:
    """Generalised Hilbert curve (Červený 2019) of any H x W, starting at the top left."""
    points = _gilbert_segment(0, 0, width, 0, 0, height) if width >= height else \
        _gilbert_segment(0, 0, 0, height, width, 0)
    return [(row, col) for col, row in points]


def _center_quarter_last(height: int, width: int) -> list[tuple[int, int]]:
    """An S-curve over the pixels outside the centre quarter, then an S-curve over the centre quarter: the order
    that completes the `center` region with every other pixel observed."""
    inside = lambda r, c: height // 4 <= r < height - height // 4 and width // 4 <= c < width - width // 4  # noqa
    curve = _s_curve(height, width)
    return [cell for cell in curve if not inside(*cell)] + [cell for cell in curve if inside(*cell)]


_BASES = {"raster": _raster, "s_curve": _s_curve, "hilbert": _hilbert, "gilbert": _gilbert,
          "center_quarter_last": _center_quarter_last}


def dihedral_variant(cells: torch.Tensor, variant: int, height: int, width: int) -> torch.Tensor:
    """(N, 2) (row, col) cells of an order under dihedral variant 0..7 (module docstring)."""
    if not 0 <= variant < NUM_VARIANTS:
        raise ValueError(f"order variant must be 0..{NUM_VARIANTS - 1}, got {variant}")
    rows, cols = cells[:, 0], cells[:, 1]
    if variant >= 4:
        if height != width:
            raise ValueError(f"order variant {variant} transposes the image, which needs a square image; got "
                             f"{height}x{width}: use variants 0-3")
        rows, cols = cols, rows
    if variant % 4 in (1, 3):
        rows = height - 1 - rows
    if variant % 4 in (2, 3):
        cols = width - 1 - cols
    return torch.stack([rows, cols], 1)


def named_order(name: str, height: int, width: int) -> torch.Tensor:
    """The order "<base>_<variant>" (e.g. s_curve_1) of an H x W image as (H*W,) row-major pixel indices."""
    match = re.fullmatch(rf"({'|'.join(BASE_ORDERS)})_(\d+)", name)
    if match is None:
        raise ValueError(f"unknown order {name!r}: a name is <base>_<variant> with base in {list(BASE_ORDERS)} and "
                         f"variant 0..{NUM_VARIANTS - 1} (e.g. s_curve_0)")
    base, variant = match.group(1), int(match.group(2))
    cells = torch.tensor(_BASES[base](height, width), dtype=torch.long)
    cells = dihedral_variant(cells, variant, height, width)
    return check_order(cells[:, 0] * width + cells[:, 1], height * width, name)


def expand_order_names(names: Sequence[str]) -> list[str]:
    """Order names with every bare base name ("s_curve") replaced by its 8 variants, duplicates refused."""
    if isinstance(names, str):
        raise ValueError(f"orders must be a list of names, e.g. [s_curve] or [s_curve_0, s_curve_3]; got {names!r}")
    expanded: list[str] = []
    for name in names:
        expanded += [f"{name}_{v}" for v in range(NUM_VARIANTS)] if name in BASE_ORDERS else [name]
    if not expanded or len(set(expanded)) != len(expanded):
        raise ValueError(f"orders must name at least one order, each once; got {list(names)}")
    return expanded


def check_order(order: torch.Tensor, num_pixels: int, name: str = "order") -> torch.Tensor:
    """`order` as a LongTensor, or a ValueError unless it is a permutation of 0..num_pixels-1."""
    order = torch.as_tensor(order, dtype=torch.long)
    if order.shape != (num_pixels,) or not torch.equal(torch.sort(order).values, torch.arange(num_pixels)):
        raise ValueError(f"{name} is not a permutation of the {num_pixels} pixels (shape {tuple(order.shape)}); an "
                         "order lists every row-major pixel index exactly once")
    return order


def rank_of(order: torch.Tensor) -> torch.Tensor:
    """The step at which each pixel is generated: the inverse permutation of `order` (..., N)."""
    rank = torch.empty_like(order)
    steps = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return rank.scatter_(-1, order, steps)


def observed_first(order: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """`order` (N,) or per sample (B, N) rearranged so each sample's `observed` (B, N) pixels come first, both
    groups keeping their relative order: (B, N). An order that already puts them first is returned unchanged."""
    order = order.expand(observed.shape[0], -1)
    seen = torch.gather(observed, 1, order)  # (B, N): is the pixel of step i observed
    # a stable sort on "hidden" puts the observed steps first and keeps each group's order
    steps = torch.sort((~seen).to(torch.int8), dim=1, stable=True).indices
    return torch.gather(order, 1, steps)


def puts_last(order: torch.Tensor, hidden: torch.Tensor) -> bool:
    """Whether `order` (N,) generates every `hidden` (N,) pixel after every observed one (a max-context order)."""
    return bool(hidden[order[len(order) - int(hidden.sum()):]].all())
