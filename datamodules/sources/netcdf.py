"""Lat-lon fields from a NetCDF3 file via scipy.io.netcdf_file (no netCDF4/xarray/cartopy needed)."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy.io import netcdf_file

from datamodules.sources.errors import DatasetNotFoundError
from datamodules.sources.latlon_grid import canonical_latlon

LATITUDE_NAMES, LONGITUDE_NAMES = {"lat", "latitude", "nav_lat"}, {"lon", "longitude", "nav_lon"}


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _axis_kind(netcdf: netcdf_file, dimension: str) -> Optional[str]:
    """"lat", "lon" or None for a dimension, from its coordinate variable's units/standard_name or its name."""
    variable = netcdf.variables.get(dimension)
    attributes = {k: _text(v).lower() for k, v in (variable._attributes.items() if variable is not None else [])}
    if attributes.get("units") in ("degrees_north", "degree_north") or attributes.get("standard_name") == "latitude" \
            or dimension.lower() in LATITUDE_NAMES:
        return "lat"
    if attributes.get("units") in ("degrees_east", "degree_east") or attributes.get("standard_name") == "longitude" \
            or dimension.lower() in LONGITUDE_NAMES:
        return "lon"
    return None


def _physical(variable, fill_value: Optional[float]) -> np.ndarray:
    """CF decoding: missing/_FillValue and non-finite entries -> `fill_value` (None: the smallest valid value),
    then scale_factor and add_offset."""
    attributes = variable._attributes  # scipy keeps a variable's attributes only there
    raw = np.array(variable[:], dtype=np.float64)
    missing = ~np.isfinite(raw)
    for key in ("_FillValue", "missing_value"):
        if key in attributes:
            missing |= np.isin(raw, np.atleast_1d(np.asarray(attributes[key], np.float64)))
    values = raw * float(attributes.get("scale_factor", 1.0)) + float(attributes.get("add_offset", 0.0))
    if missing.all():
        raise ValueError("every value of the variable is missing")
    values[missing] = values[~missing].min() if fill_value is None else fill_value
    return values


class NetCDFLatLon:
    """Variables of a NetCDF3 file on a global lat-lon grid as one split {"all": (T, h, w, C) float32}: the
    non-lat/lon axis (time) gives the samples, each variable a channel, in physical units. Latitude and
    longitude axes are found by their coordinate variables (units degrees_north/east) or names, and the grid
    is brought to the LatLon convention (north->south incl. the poles, longitude from 0; see latlon_grid).
    Missing values become `fill_value` (None: the variable's smallest valid value, e.g. sea ice for SST)."""

    num_levels = None

    def __init__(self, path: str | Path, variables: str | Sequence[str] = "sst", fill_value: Optional[float] = None):
        self.path = Path(path).expanduser()
        self.variables = [variables] if isinstance(variables, str) else list(variables)
        self.fill_value = fill_value
        if not self.path.is_file():
            raise DatasetNotFoundError(
                f"NetCDF file {self.path}", [self.path], layout="a NetCDF3 (classic or 64-bit offset) file with "
                f"the variable(s) {self.variables} over (time,) lat, lon",
                origin="any global lat-lon NetCDF3 dataset, e.g. cartopy's bundled HadISST1 SST field "
                       "(cartopy/data/netcdf/HadISST1_SST_update.nc inside the cartopy wheel)")
        self.channels = len(self.variables)

    @cached_property
    def _fields(self) -> np.ndarray:
        try:
            netcdf = netcdf_file(self.path, "r", mmap=False)
        except (TypeError, ValueError, OSError) as error:
            raise ValueError(f"{self.path}: not a NetCDF3 file ({error}); scipy reads NetCDF3 only: convert "
                             "NetCDF4 with `nccopy -k classic in.nc out.nc`") from error
        with netcdf:
            return np.stack([self._read(netcdf, name) for name in self.variables], axis=-1)

    def _read(self, netcdf: netcdf_file, name: str) -> np.ndarray:
        if name not in netcdf.variables:
            raise ValueError(f"{self.path}: no variable {name!r}; it has {sorted(netcdf.variables)}")
        variable = netcdf.variables[name]
        kinds = [_axis_kind(netcdf, d) for d in variable.dimensions]
        if kinds.count("lat") != 1 or kinds.count("lon") != 1:
            raise ValueError(f"{self.path}: variable {name!r} over {variable.dimensions} needs exactly one "
                             "latitude and one longitude dimension")
        others = [i for i, k in enumerate(kinds) if k is None and variable.shape[i] > 1]
        if len(others) > 1:
            raise ValueError(f"{self.path}: variable {name!r} over {variable.dimensions} has more than one "
                             "sample axis besides lat/lon; extract one level first")
        try:
            values = _physical(variable, self.fill_value)
        except ValueError as error:
            raise ValueError(f"{self.path}: variable {name!r}: {error}") from error
        lat_axis, lon_axis = kinds.index("lat"), kinds.index("lon")
        axes = [variable.dimensions[lat_axis], variable.dimensions[lon_axis]]
        if not all(axis in netcdf.variables for axis in axes):
            raise ValueError(f"{self.path}: the coordinate variables {axes} (degrees) are missing")
        order = others + [lat_axis, lon_axis]
        order += [i for i in range(values.ndim) if i not in order]  # singleton axes, squeezed next
        values = values.transpose(order).reshape(-1, variable.shape[lat_axis], variable.shape[lon_axis], 1)
        latitudes, longitudes = (np.asarray(netcdf.variables[axis][:], np.float64) for axis in axes)
        return canonical_latlon(values, latitudes, longitudes)[..., 0].astype(np.float32)

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return self._fields.shape[1:]

    def splits(self) -> dict[str, np.ndarray]:
        return {"all": self._fields}
