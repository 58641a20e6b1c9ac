"""Respacing: run a trained diffusion on a subset of its timesteps (Nichol & Dhariwal 2021, Sec. 4; DDIM)."""
from __future__ import annotations

import copy
from typing import Iterable, Sequence, Union

import numpy as np

from .gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps: int, section_counts: Union[int, str, Sequence[int]]) -> list[int]:
    """The sorted 0-based steps to keep out of num_timesteps.

    section_counts: "ddimN" keeps N steps at the integer stride that gives exactly N (0, s, 2s, ...; DDIM's
    uniform skip); an int N or "N" keeps N evenly spaced steps from 0 to num_timesteps - 1 (fractional stride,
    rounded); a list or "10,20,30" splits the process into equal sections and keeps that many evenly spaced
    steps from each section.
    """
    if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            return _ddim_steps(num_timesteps, spec)
        try:
            section_counts = [int(count) for count in spec.split(",")]
        except ValueError:
            raise ValueError(
                f"cannot parse section_counts {section_counts!r}: use 'ddimN', 'N' or comma-separated counts "
                f"like '10,20,30'"
            ) from None
    elif isinstance(section_counts, (int, np.integer)):
        section_counts = [int(section_counts)]
    section_counts = list(section_counts)
    if not section_counts or any(count < 1 for count in section_counts):
        raise ValueError(f"every section must keep at least 1 step, got {section_counts}")
    if len(section_counts) > num_timesteps:
        raise ValueError(f"{len(section_counts)} sections do not fit in {num_timesteps} steps")

    size_per_section, extra = divmod(num_timesteps, len(section_counts))
    kept, section_start = [], 0
    for index, count in enumerate(section_counts):
        size = size_per_section + (1 if index < extra else 0)
        if count > size:
            raise ValueError(f"cannot keep {count} steps from a section of {size} steps (of {num_timesteps} total)")
        stride = 1.0 if count == 1 else (size - 1) / (count - 1)
        kept += [section_start + round(i * stride) for i in range(count)]
        section_start += size
    return kept


def _ddim_steps(num_timesteps: int, spec: str) -> list[int]:
    try:
        count = int(spec[len("ddim"):])
    except ValueError:
        raise ValueError(f"cannot parse {spec!r}: use 'ddimN' with an integer N, e.g. 'ddim50'") from None
    for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == count:
            return list(range(0, num_timesteps, stride))
    possible = sorted({len(range(0, num_timesteps, stride)) for stride in range(1, num_timesteps + 1)})
    nearest = sorted(possible, key=lambda n: abs(n - count))[:2]
    raise ValueError(
        f"no integer stride keeps exactly {count} of {num_timesteps} steps; nearest possible: "
        f"{', '.join(f'ddim{n}' for n in sorted(nearest))}, or '{count}' for a fractional stride"
    )


def respace(diffusion: GaussianDiffusion, use_timesteps: Iterable[int]) -> GaussianDiffusion:
    """`diffusion` on its kept steps `use_timesteps` (0-based, in its own steps).

    The result is a shallow copy, so its class (a subclass's overrides), settings, operator and decode are the
    original's; only the betas change, to 1 - a_bar[k_i] / a_bar[k_{i-1}] over the kept steps k, so that a_bar
    at each kept step equals the original process's. Every sampler, loss and bound then runs unchanged over the
    subset, while the network is called with the original timestep indices it was trained on (timestep_map).
    """
    kept = np.array(sorted({int(step) for step in use_timesteps}), dtype=np.int64)
    if len(kept) < 2 or kept[0] < 0 or kept[-1] >= diffusion.num_timesteps:
        raise ValueError(
            f"use_timesteps must hold at least 2 distinct steps in [0, {diffusion.num_timesteps}), got {kept.tolist()}"
        )
    timestep_map = diffusion.timestep_map[kept]
    alphas_cumprod = diffusion.original.alphas_cumprod[timestep_map]  # exact also when respacing a respaced process
    spaced = copy.copy(diffusion)
    spaced._set_betas(1.0 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1]))
    spaced.timestep_map = timestep_map
    return spaced
