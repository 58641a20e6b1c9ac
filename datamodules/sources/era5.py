"""ERA5 2 m temperature at 46x90 as released with GASP (Dupont et al. 2022): one .npz per sample and split."""
from __future__ import annotations

import zipfile
from functools import cached_property
from pathlib import Path
from typing import Optional

import numpy as np

from datamodules.sources.files import SPLIT_NAMES, find_data_dir
from datamodules.sources.latlon_grid import canonical_latlon

SPLIT_PREFIX = "era5_temp2m_16x_"
# GASP's normalisation constants: min / max of the train split, Kelvin
TRAIN_MIN_KELVIN, TRAIN_MAX_KELVIN = 202.66, 320.93


def _split_dir(root: Path, split: str) -> Optional[Path]:
    for path in (root / f"{SPLIT_PREFIX}{split}", root / split):
        if path.is_dir() and any(path.glob("*.npz")):
            return path
    return None


def load_sample(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latitude (h,), longitude (w,), temperature (h, w)) of one GASP .npz, validated."""
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: np.asarray(data[key]) for key in ("latitude", "longitude", "temperature")}
    except KeyError as error:
        raise ValueError(f"{path}: a GASP ERA5 sample holds 'latitude', 'longitude' and 'temperature'; "
                         f"missing {error}") from error
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz ({error})") from error
    latitude, longitude, temperature = fields["latitude"], fields["longitude"], fields["temperature"]
    if latitude.ndim != 1 or longitude.ndim != 1 or temperature.shape != (len(latitude), len(longitude)):
        raise ValueError(f"{path}: temperature {temperature.shape} must be (len(latitude), len(longitude)) = "
                         f"({len(latitude)}, {len(longitude)})")
    return latitude, longitude, temperature


class ERA5Temperature:
    """Splits {"train", "val", "test"} (those present) as (M, 46, 90, 1) float32 Kelvin on the LatLon grid.

    On disk (GASP's release): `<data_dir>/era5_temp2m_16x_{train,val,test}/*.npz` (or `<data_dir>/{train,...}`),
    each with `latitude` (46,) degrees, `longitude` (90,) degrees and `temperature` (46, 90) Kelvin. Samples are
    sorted by file name, as GASP's loader does.
    """

    channels = 1
    num_levels = None

    def __init__(self, data_dir: Optional[str | Path] = None, data_root: Optional[str | Path] = None):
        self.root = find_data_dir(
            data_dir, ["era5", "era5_temp2m_16x"], lambda d: _split_dir(d, "train") is not None,
            dataset="ERA5 temperature (GASP release)",
            layout=f"{SPLIT_PREFIX}train/*.npz (and {SPLIT_PREFIX}val, {SPLIT_PREFIX}test), each .npz with "
                   "latitude (46,), longitude (90,), temperature (46, 90) in Kelvin",
            origin="the ERA5 link of github.com/EmilienDupont/neural-function-distributions (README, 'Downloading "
                   "datasets'): era5_temp2m_16x_{train,val,test}.zip, unzipped side by side", data_root=data_root)
        self._dirs = {s: d for s in SPLIT_NAMES if (d := _split_dir(self.root, s)) is not None}

    @cached_property
    def _fields(self) -> dict[str, np.ndarray]:
        out = {}
        for split, directory in self._dirs.items():
            paths = sorted(directory.glob("*.npz"))
            samples = [load_sample(p) for p in paths]
            latitude, longitude, _ = samples[0]
            for path, (lat, lon, _) in zip(paths, samples):
                if lat.shape != latitude.shape or lon.shape != longitude.shape \
                        or not (np.allclose(lat, latitude) and np.allclose(lon, longitude)):
                    raise ValueError(f"{path}: its lat/lon grid differs from {paths[0]}'s; one split shares one grid")
            temperature = np.stack([t for _, _, t in samples]).astype(np.float32)[..., None]
            out[split] = canonical_latlon(temperature, latitude, longitude).astype(np.float32)
        return out

    @cached_property
    def item_shape(self) -> tuple[int, int, int]:
        """From the first train file alone, so that building a maker does not read the whole release."""
        latitude, longitude, temperature = load_sample(min(self._dirs["train"].glob("*.npz")))
        return canonical_latlon(temperature[None, ..., None], latitude, longitude).shape[1:]

    def splits(self) -> dict[str, np.ndarray]:
        return dict(self._fields)
