"""Bring a global lat-lon array onto fieldgen's LatLon convention: rows +90..-90 inclusive, columns 360k/w."""
from __future__ import annotations

import numpy as np


def _uniform_step(degrees: np.ndarray, what: str) -> float:
    steps = np.diff(degrees)
    if len(degrees) < 2 or not np.allclose(steps, steps[0], rtol=1e-3, atol=1e-4) or steps[0] == 0:
        raise ValueError(f"{what} must be evenly spaced (a regular lat-lon grid), got {degrees[:4]}...")
    return float(abs(steps[0]))


def linear_weights(positions: np.ndarray, size: int, periodic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, upper weight) of fractional `positions` on an axis of `size` samples."""
    if periodic:
        lower = np.floor(positions).astype(np.int64)
        return lower % size, (lower + 1) % size, positions - lower
    positions = np.clip(positions, 0, size - 1)  # rows past the outermost data latitude take its value
    lower = np.minimum(np.floor(positions).astype(np.int64), size - 2)
    return lower, lower + 1, positions - lower


def canonical_latlon(values: np.ndarray, latitudes: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    """values (M, h, w, C) on the grid `latitudes` (h,) x `longitudes` (w,) degrees, in any order and longitude
    origin -> (M, h', w', C) on LatLon((h', w')): latitudes linspace(90, -90, h') with the source's spacing,
    longitudes 360 k / w'. A source already on that grid is only reordered; any other global grid (e.g. cell
    centres at +-89.5) is linearly interpolated, periodically in longitude."""
    latitudes, longitudes = np.asarray(latitudes, np.float64), np.asarray(longitudes, np.float64)
    if values.shape[1:3] != (len(latitudes), len(longitudes)):
        raise ValueError(f"values {values.shape} do not match {len(latitudes)} latitudes x {len(longitudes)} "
                         "longitudes")
    lat_order = np.argsort(-latitudes, kind="stable")
    lon_wrapped = np.mod(longitudes, 360.0)
    lon_order = np.argsort(lon_wrapped, kind="stable")
    values = values[:, lat_order][:, :, lon_order]
    latitudes, longitudes = latitudes[lat_order], lon_wrapped[lon_order]
    lat_step = _uniform_step(latitudes, "latitudes")
    lon_step = _uniform_step(longitudes, "longitudes")
    width = int(round(360.0 / lon_step))
    if width != len(longitudes):
        raise ValueError(f"a LatLon field must be global: {len(longitudes)} longitudes every {lon_step} degrees "
                         "do not go round the globe")
    if latitudes[0] < 90 - lat_step / 2 - 1e-6 or latitudes[-1] > -90 + lat_step / 2 + 1e-6:
        raise ValueError(f"a LatLon field must be global: latitudes {latitudes[0]}..{latitudes[-1]} stop more "
                         f"than half a step ({lat_step} degrees) short of the poles")
    height = int(round(180.0 / lat_step)) + 1
    target_lat = np.linspace(90.0, -90.0, height)
    target_lon = np.arange(width) * 360.0 / width
    if len(latitudes) == height and np.allclose(latitudes, target_lat, atol=1e-4) \
            and np.allclose(longitudes, target_lon, atol=1e-4):
        return values
    lat0, lat1, lat_w = linear_weights((latitudes[0] - target_lat) / lat_step, len(latitudes), periodic=False)
    lon0, lon1, lon_w = linear_weights((target_lon - longitudes[0]) / lon_step, width, periodic=True)
    lat_w, lon_w = lat_w[None, :, None, None], lon_w[None, None, :, None]
    values = values[:, lat0] * (1 - lat_w) + values[:, lat1] * lat_w
    return (values[:, :, lon0] * (1 - lon_w) + values[:, :, lon1] * lon_w).astype(np.float32)
