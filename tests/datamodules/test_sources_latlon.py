"""Lat-lon readers on small files in the real formats: NetCDF3 (scipy) and GASP's ERA5 .npz folders."""
import re

import numpy as np
import pytest

from datamodules.sources.era5 import ERA5Temperature
from datamodules.sources.errors import DatasetNotFoundError
from datamodules.sources.latlon_grid import canonical_latlon
from datamodules.sources.netcdf import NetCDFLatLon
from fake_datasets import smooth_field, write_era5, write_netcdf


def test_sources_netcdf_cell_centred_grid_becomes_canonical(tmp_path):
    latitude, longitude = np.arange(-85.0, 90, 10), np.arange(-175.0, 180, 10)  # south->north, from -180
    write_netcdf(tmp_path / "sst.nc", latitude, longitude)
    source = NetCDFLatLon(tmp_path / "sst.nc", "sst")
    fields = source.splits()["all"]
    assert fields.shape == (3, 19, 36, 1) and fields.dtype == np.float32
    assert source.item_shape == (19, 36, 1) and source.channels == 1 and source.num_levels is None
    target_lat, target_lon = np.linspace(90, -90, 19), np.arange(36) * 10.0
    expected = smooth_field(np.clip(target_lat, -85, 85), target_lon, time=2)  # poles take the outermost rows
    assert np.allclose(fields[2, ..., 0], expected, atol=0.02)


def test_sources_netcdf_canonical_grid_passes_through_exactly(tmp_path):
    latitude, longitude = np.linspace(90, -90, 7), np.arange(12) * 30.0
    values = write_netcdf(tmp_path / "t.nc", latitude, longitude, times=2, dims=("lat", "lon", "time"))
    fields = NetCDFLatLon(tmp_path / "t.nc", ["sst", "sst"]).splits()["all"]
    assert fields.shape == (2, 7, 12, 2)
    assert np.allclose(fields[..., 0], values, atol=1e-4) and np.array_equal(fields[..., 0], fields[..., 1])


def test_sources_netcdf_missing_values_are_filled(tmp_path):
    latitude, longitude = np.linspace(90, -90, 7), np.arange(12) * 30.0
    missing = np.zeros((1, 7, 12), bool)
    missing[0, 3, 4] = True
    values = write_netcdf(tmp_path / "t.nc", latitude, longitude, times=1, missing=missing)
    filled = NetCDFLatLon(tmp_path / "t.nc").splits()["all"][0, ..., 0]
    assert np.isclose(filled[3, 4], values[~missing].min())
    assert NetCDFLatLon(tmp_path / "t.nc", fill_value=-5.0).splits()["all"][0, 3, 4, 0] == -5.0


def test_sources_netcdf_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="absent.nc"):
        NetCDFLatLon(tmp_path / "absent.nc")
    (tmp_path / "hdf5.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="NetCDF3"):
        NetCDFLatLon(tmp_path / "hdf5.nc").splits()
    write_netcdf(tmp_path / "t.nc", np.linspace(90, -90, 7), np.arange(12) * 30.0)
    with pytest.raises(ValueError, match="no variable 'sea_temp'"):
        NetCDFLatLon(tmp_path / "t.nc", "sea_temp").splits()
    write_netcdf(tmp_path / "regional.nc", np.linspace(60, -60, 5), np.arange(12) * 30.0)
    with pytest.raises(ValueError, match="global"):
        NetCDFLatLon(tmp_path / "regional.nc").splits()


def test_sources_latlon_canonical_reorders_exactly():
    latitude, longitude = np.linspace(-90, 90, 5), (np.arange(8) * 45.0 + 180) % 360 - 180
    values = np.random.default_rng(0).normal(size=(2, 5, 8, 1)).astype(np.float32)
    out = canonical_latlon(values, latitude, longitude)
    lon_order = np.argsort(np.mod(longitude, 360))
    assert np.array_equal(out, values[:, ::-1][:, :, lon_order])


def test_sources_era5_gasp_folders(tmp_path):
    train = write_era5(tmp_path, "train", 3)
    test = write_era5(tmp_path, "test", 2, latitude=np.linspace(-90, 90, 46), seed=4)  # stored south->north
    era5 = ERA5Temperature(tmp_path)
    splits = era5.splits()
    assert set(splits) == {"train", "test"} and era5.item_shape == (46, 90, 1)
    assert np.array_equal(splits["train"][..., 0], train)
    assert np.array_equal(splits["test"][..., 0], test[:, ::-1])


def test_sources_era5_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"(?s){re.escape(str(tmp_path))}.*era5_temp2m_16x_train"):
        ERA5Temperature(tmp_path)
    write_era5(tmp_path, "train", 2)
    folder = tmp_path / "era5_temp2m_16x_train"
    np.savez(folder / "sample_00002.npz", latitude=np.zeros(46), temperature=np.zeros((46, 90)))
    with pytest.raises(ValueError, match="sample_00002.npz.*'longitude'"):
        ERA5Temperature(tmp_path).splits()
    (folder / "sample_00002.npz").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(ValueError, match="sample_00002.npz"):
        ERA5Temperature(tmp_path).splits()
    np.savez(folder / "sample_00002.npz", latitude=np.linspace(90, -90, 46), longitude=np.linspace(0, 356, 90),
             temperature=np.zeros((45, 90)))
    with pytest.raises(ValueError, match=r"\(46, 90\)"):
        ERA5Temperature(tmp_path).splits()
