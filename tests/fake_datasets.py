"""Tiny, format-exact fakes of every on-disk dataset the data configs read, and the format writers behind them.

`write_fake_datasets(root)` lays each one out where its source looks under a data root ($FIELDGEN_DATA_DIR,
`paths.data_dir`); the writers are shared with the source tests.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from scipy.io import netcdf_file

from datamodules.sources.era5 import SPLIT_PREFIX, TRAIN_MAX_KELVIN, TRAIN_MIN_KELVIN
from datamodules.sources.procedural_scenes import EVAL_SCENE, scene_spec, write_scene

IMAGE_FOLDERS = ("celebahq", "ffhq", "lsun_church", "lsun_bedroom", "lsun_cat")
AFHQ_CLASSES = ("cat", "dog", "wild")
# (width, height): landscape, portrait and square, so that centre-cropping is exercised
IMAGE_SIZES = ((40, 30), (17, 64), (50, 50), (33, 21))
CIFAR_LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHAPENET_SYNSETS = ("02691156", "03001627")  # airplane, chair


def write_idx(path: Path, array: np.ndarray, magic: Optional[int] = None) -> Path:
    """An IDX file as MNIST's (gzipped when `path` ends in .gz): magic 0x0000 | 0x08 (ubyte) | ndim, big-endian
    uint32 sizes, raw bytes."""
    magic = magic if magic is not None else 0x0800 | array.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(payload)
    return path


def write_idx_folder(folder: Path, num_train: int, num_test: int, seed: int = 0) -> Path:
    """The four gzipped IDX files of MNIST / Fashion-MNIST: {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    return folder


class Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 strings (BINSTRING), as cPickle did for the real CIFAR-10 batches."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_string(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        opcode = pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256 else \
            pickle.BINSTRING + struct.pack("<i", len(data))
        self.write(opcode + data)
        self.memoize(obj)

    dispatch[bytes] = save_python2_string
    dispatch[str] = save_python2_string


def _write_python2_pickle(path: Path, obj: dict) -> None:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x, which wrote the real files, names the array constructor numpy.core.multiarray._reconstruct
    path.write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def write_cifar_batch(path: Path, images: np.ndarray, labels: Sequence[int],
                      batch_label: str = "training batch 1 of 5") -> Path:
    """A python-version CIFAR-10 batch: {batch_label, labels, data (M, 3072) uint8 planes R|G|B, filenames}."""
    _write_python2_pickle(path, {
        "batch_label": batch_label, "labels": [int(x) for x in labels],
        "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
        "filenames": [f"image_{i}.png" for i in range(len(images))]})
    return path


def write_cifar_batches(folder: Path, train_images: np.ndarray, train_labels: Sequence[int],
                        test_images: np.ndarray, test_labels: Sequence[int]) -> Path:
    """cifar-10-batches-py's files: data_batch_1..5 (the train split in five parts), test_batch, batches.meta."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = np.array_split(np.arange(len(train_images)), 5)
    for i, part in enumerate(parts, start=1):
        write_cifar_batch(folder / f"data_batch_{i}", train_images[part], np.asarray(train_labels)[part],
                          f"training batch {i} of 5")
    write_cifar_batch(folder / "test_batch", test_images, test_labels, "testing batch 1 of 1")
    _write_python2_pickle(folder / "batches.meta", {
        "num_cases_per_batch": len(parts[0]), "label_names": list(CIFAR_LABEL_NAMES), "num_vis": 3072})
    return folder


def write_binvox(path: Path, voxels: np.ndarray) -> Path:
    """A binvox file of a bool (x, y, z) grid: header, then (value, count <= 255) runs over y fastest, z, x."""
    flat = voxels.transpose(0, 2, 1).ravel().astype(np.uint8)
    starts = np.flatnonzero(np.diff(flat, prepend=flat[0] ^ 1))
    lengths = np.diff(np.append(starts, len(flat)))
    # a run longer than 255 becomes full pieces of 255 and one last piece of the rest
    pieces = -(-lengths // 255)
    counts = np.full(pieces.sum(), 255, np.int64)
    counts[np.cumsum(pieces) - 1] = lengths - 255 * (pieces - 1)
    runs = np.stack([np.repeat(flat[starts], pieces), counts], axis=1).astype(np.uint8)
    header = b"#binvox 1\ndim %d %d %d\ntranslate -0.5 -0.5 -0.5\nscale 1.0\ndata\n" % voxels.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + runs.tobytes())
    return path


def smooth_field(latitude: np.ndarray, longitude: np.ndarray, time: float = 0) -> np.ndarray:
    """A smooth (lat, lon) test field in degC: linear in latitude, a cosine in longitude, offset by `time`."""
    lat, lon = np.meshgrid(latitude, longitude, indexing="ij")
    return 15 + 0.2 * lat + 3 * np.cos(np.deg2rad(lon)) + time


def write_netcdf(path: Path, latitude: np.ndarray, longitude: np.ndarray, times: int = 3,
                 dims: Sequence[str] = ("time", "lat", "lon"), missing: Optional[np.ndarray] = None) -> np.ndarray:
    """A CF-style NetCDF3 file like HadISST's: sst over `dims` (a permutation of time, lat, lon) stored as
    (value - 10) / 0.5 with a _FillValue where `missing` (time, lat, lon) is set. Returns the values
    (time, lat, lon) in degC."""
    with netcdf_file(path, "w") as f:
        f.createDimension("time", times)
        f.createDimension("lat", len(latitude))
        f.createDimension("lon", len(longitude))
        lat = f.createVariable("lat", "f", ("lat",))
        lat[:], lat.units = latitude, b"degrees_north"
        lon = f.createVariable("lon", "f", ("lon",))
        lon[:], lon.units = longitude, b"degrees_east"
        values = np.stack([smooth_field(latitude, longitude, t) for t in range(times)])
        stored = (values - 10) / 0.5
        if missing is not None:
            stored[missing] = -1e30
        order = [("time", "lat", "lon").index(d) for d in dims]
        sst = f.createVariable("sst", "f", tuple(dims))
        sst[:] = stored.transpose(order)
        sst.scale_factor, sst.add_offset, sst._FillValue = 0.5, 10.0, np.float32(-1e30)
    return values


def write_era5(root: Path, split: str, count: int, latitude: Optional[np.ndarray] = None,
               seed: int = 3) -> np.ndarray:
    """`count` GASP ERA5 samples in root/era5_temp2m_16x_<split>/sample_<i>.npz: latitude (46,) (north to south
    unless given), longitude (90,) from 0, temperature (46, 90) Kelvin within GASP's train range. Returns the
    temperatures (count, 46, 90) float32."""
    folder = root / f"{SPLIT_PREFIX}{split}"
    folder.mkdir(parents=True)
    latitude = np.linspace(90, -90, 46) if latitude is None else latitude
    longitude = np.linspace(0, 356, 90)
    rng = np.random.default_rng(seed)
    temperatures = rng.uniform(TRAIN_MIN_KELVIN, TRAIN_MAX_KELVIN, (count, 46, 90)).astype(np.float32)
    for i, temperature in enumerate(temperatures):
        np.savez(folder / f"sample_{i:05d}.npz", latitude=latitude, longitude=longitude, temperature=temperature)
    return temperatures


def write_image_folder(folder: Path, sizes: Sequence[tuple[int, int]], seed: int = 0) -> list[Path]:
    """RGB noise images of the given (width, height) sizes, named 0, 1, ..., alternately .jpg and .png."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (width, height) in enumerate(sizes):
        paths.append(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def write_meshes(folder: Path) -> list[Path]:
    """Two trimesh primitives exported in two formats: a box (.obj) and an icosphere (.stl)."""
    import trimesh  # imported on use: it costs half a second at import

    folder.mkdir(parents=True, exist_ok=True)
    meshes = {"box.obj": trimesh.creation.box(extents=(2.0, 1.0, 1.5)),
              "sphere.stl": trimesh.creation.icosphere(subdivisions=1, radius=1.0)}
    for name, mesh in meshes.items():
        mesh.export(folder / name)
    return [folder / name for name in meshes]


def _blob_voxels(size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size,)^3 occupancy of a random axis-aligned ellipsoid inside the cube."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    centre, radii = rng.uniform(-0.2, 0.2, 3), rng.uniform(0.3, 0.7, 3)
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 \
        + ((z - centre[2]) / radii[2]) ** 2 <= 1


def write_blocky_scene(folder: Path, size: int, upscale: int, num_views: dict[str, int]) -> Path:
    """The procedural evaluation scene in the Blender format, rendered at size x size and written `upscale` times
    larger (nearest neighbour): a Blender-synthetic-sized camera (e.g. 336, 168 at half resolution, which DietNeRF's
    168 render needs) for the cost of a tiny render."""
    write_scene(folder, scene_spec(*EVAL_SCENE), size=size, num_views=num_views, seed=0)
    for png in folder.glob("*/*.png"):
        image = Image.open(png)
        image.resize((size * upscale, size * upscale), Image.NEAREST).save(png)
    return folder


def write_fake_datasets(root: Path) -> Path:
    """Every on-disk dataset of conf/data at its default place under `root`, a few items each (~350 KB, mostly
    ERA5):

    mnist/, fashion-mnist/             {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (5 train, 3 test)
    cifar10/cifar-10-batches-py/       data_batch_1..5 (2 images each), test_batch (2), batches.meta
    celebahq/ ffhq/ lsun_church/ lsun_bedroom/ lsun_cat/   4 .jpg/.png images of assorted sizes
    afhq/{train,val}/{cat,dog,wild}/   one image each, as the AFHQ release nests them
    era5/era5_temp2m_16x_{train,val,test}/   2, 1, 1 GASP .npz samples (46 x 90 Kelvin)
    shapenet/<synset>/<model>/models/model_normalized.solid.binvox   4 grids of 64^3, as ShapeNetCore nests them
    meshes/                            box.obj, sphere.stl
    field.nc                           NetCDF3 sst(time=4, lat=18, lon=36) on HadISST-like cell centres
    nerf_synthetic/lego/               a procedural scene in the Blender format: 100 train, 8 val, 16 test
                                       views rendered at 16x16, written at 336x336 (168 at half resolution,
                                       DietNeRF's render size; the official 8 and 14 view IDs exist)
    """
    root = Path(root)
    rng = np.random.default_rng(0)
    write_idx_folder(root / "mnist", num_train=5, num_test=3, seed=1)
    write_idx_folder(root / "fashion-mnist", num_train=5, num_test=3, seed=2)
    write_cifar_batches(root / "cifar10" / "cifar-10-batches-py",
                        rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 10),
                        rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 2))
    for seed, name in enumerate(IMAGE_FOLDERS):
        write_image_folder(root / name, IMAGE_SIZES, seed=seed)
    for split_index, split in enumerate(("train", "val")):
        for i, animal in enumerate(AFHQ_CLASSES):
            write_image_folder(root / "afhq" / split / animal, IMAGE_SIZES[i + split_index:][:1],
                               seed=3 * split_index + i)
    for seed, (split, count) in enumerate((("train", 2), ("val", 1), ("test", 1))):
        write_era5(root / "era5", split, count, seed=seed)
    for i in range(4):
        model = root / "shapenet" / SHAPENET_SYNSETS[i % 2] / f"model_{i:04d}" / "models"
        write_binvox(model / "model_normalized.solid.binvox", _blob_voxels(64, rng))
    write_meshes(root / "meshes")
    write_netcdf(root / "field.nc", np.arange(85.0, -90, -10), np.arange(-175.0, 180, 10), times=4)
    write_blocky_scene(root / "nerf_synthetic" / "lego", size=16, upscale=21,
                       num_views={"train": 100, "val": 8, "test": 16})
    return root
