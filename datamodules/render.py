"""Pictures of fields for sample grids: images tiled; spheres and lat-lon grids as an equirectangular map plus an
orthographic globe; voxels as three depth-shaded orthogonal max-projections (optionally a marching-cubes render).

All lookups are precomputed index maps (nearest grid point per output pixel) applied to the whole batch at once.
torchvision's make_grid/save_image are not used: torchvision does not install here.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import numpy as np
from PIL import Image

from datamodules.fields import Domain, Grid, LatLon, Sphere
from datamodules.images import unit_to_levels

BACKGROUND = 255
DEFAULT_VIEWS = {"sphere": (-90.0, 180.0), "latlon": (20.0, 0.0)}  # (lat, lon) degrees at the globe's centre
DEFAULT_CMAPS = {"grid": None, "sphere": None, "latlon": "coolwarm"}  # None: grey (image-derived signals)
VOXEL_COLOUR = np.array([70, 130, 180], np.float32)  # steel blue, darkened with depth
PANEL = 235  # light grey behind voxel projections, so that empty space still shows the panel
MIN_TILE = {"image": 32, "sphere": 64, "latlon": 64, "voxels": 64}  # auto zoom: tiles at least this tall


@lru_cache(maxsize=8)
def _lut(cmap: Optional[str]) -> np.ndarray:
    """(256, 3) uint8 colours for levels 0..255: grey, or a matplotlib colormap."""
    if cmap is None:
        return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    import matplotlib  # imported on use: only colormapped renders need it

    return np.round(matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def colorize(values: np.ndarray, cmap: Optional[str] = None) -> np.ndarray:
    """(..., C) values in [-1, 1] -> (..., 3) uint8: RGB as is for C = 3, through `cmap` (None: grey) for C = 1."""
    levels = unit_to_levels(values, 256)
    if values.shape[-1] == 3:
        return levels
    if values.shape[-1] == 1:
        return _lut(cmap)[levels[..., 0]]
    raise ValueError(f"render_fields draws 1-channel (colormapped) or 3-channel (RGB) fields, got "
                     f"{values.shape[-1]} channels; select channels first")


def tile_images(images: np.ndarray, nrow: Optional[int] = None, padding: int = 2) -> np.ndarray:
    """(B, h, w, 3) uint8 -> one (rows (h + p) + p, nrow (w + p) + p, 3) uint8 grid, row-major, white gaps."""
    batch, height, width, channels = images.shape
    nrow = min(nrow or math.ceil(math.sqrt(batch)), batch)
    rows = math.ceil(batch / nrow)
    tiles = np.full((rows * nrow, height + padding, width + padding, channels), BACKGROUND, np.uint8)
    tiles[:batch, padding:, padding:] = images
    grid = tiles.reshape(rows, nrow, height + padding, width + padding, channels).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * (height + padding), nrow * (width + padding), channels)
    return np.pad(grid, ((0, padding), (0, padding), (0, 0)), constant_values=BACKGROUND)


def _upscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (B, h, w, 3) by an integer factor."""
    return images if factor == 1 else images.repeat(factor, axis=1).repeat(factor, axis=2)


def _grid_index(domain: Domain, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Flat index of the grid point of `domain` (Sphere or LatLon) nearest in row and column to each lat/lon."""
    rows, cols = domain.shape
    if isinstance(domain, Sphere):  # Driscoll-Healy: colatitude pi j / n, longitude 2 pi k / n
        row = np.clip(np.rint((90.0 - latitude) / 180.0 * rows), 0, rows - 1)
    else:  # LatLon: latitude 90 .. -90 inclusive
        row = np.rint((90.0 - latitude) / 180.0 * (rows - 1))
    col = np.mod(np.rint(np.mod(longitude, 360.0) / 360.0 * cols), cols)
    return (row * cols + col).astype(np.int64)


@lru_cache(maxsize=16)
def _equirectangular_index(domain: Domain, size: int) -> np.ndarray:
    """(size, 2 size) flat grid indices of an equirectangular map (north up, longitude 0 at the left)."""
    latitude = 90.0 - (np.arange(size) + 0.5) * 180.0 / size
    longitude = (np.arange(2 * size) + 0.5) * 180.0 / size
    return _grid_index(domain, *np.meshgrid(latitude, longitude, indexing="ij"))


@lru_cache(maxsize=16)
def _globe_index(domain: Domain, size: int, view: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """((size, size) flat grid indices, on-disk mask) of an orthographic view centred at `view` = (lat, lon)."""
    lat0, lon0 = np.deg2rad(view)
    centre = np.array([np.cos(lat0) * np.cos(lon0), np.cos(lat0) * np.sin(lon0), np.sin(lat0)])
    east = np.array([-np.sin(lon0), np.cos(lon0), 0.0])
    north = np.cross(centre, east)
    axis = (np.arange(size) + 0.5) * 2.0 / size - 1.0
    x, y = np.meshgrid(axis, -axis)  # screen right, screen up
    depth = np.sqrt(np.clip(1.0 - x * x - y * y, 0.0, None))
    points = x[..., None] * east + y[..., None] * north + depth[..., None] * centre
    latitude = np.rad2deg(np.arcsin(np.clip(points[..., 2], -1.0, 1.0)))
    longitude = np.rad2deg(np.arctan2(points[..., 1], points[..., 0]))
    return _grid_index(domain, latitude, longitude), x * x + y * y <= 1.0


def _spherical_tiles(values: np.ndarray, domain: Domain, cmap: Optional[str], scale: int,
                     view: tuple[float, float], gap: int) -> np.ndarray:
    """(B, S, 3 S + gap, 3): equirectangular map beside an orthographic globe, S = scale * rows."""
    size = scale * domain.shape[0]
    colours = colorize(values, cmap)  # (B, N, 3)
    flat_map = colours[:, _equirectangular_index(domain, size)]
    globe_index, on_disk = _globe_index(domain, size, view)
    globe = np.where(on_disk[None, ..., None], colours[:, globe_index], np.uint8(BACKGROUND))
    spacer = np.full((len(values), size, gap, 3), BACKGROUND, np.uint8)
    return np.concatenate([flat_map, spacer, globe], axis=2)


def _voxel_tiles(values: np.ndarray, domain: Grid, scale: int, gap: int, mesh: bool) -> np.ndarray:
    """(B, S, 3 S + 2 gap [+ gap + S], 3): depth-shaded max-projections along axes 0, 1, 2 (seen from index 0)."""
    if values.shape[-1] != 1:
        raise ValueError(f"voxel fields have 1 channel (occupancy), got {values.shape[-1]}")
    occupied = values[..., 0].reshape(len(values), *domain.shape) > 0
    panels = []
    for axis in range(3):
        length = domain.shape[axis]
        # nearer voxels brighter: a max-projection of occupancy weighted by 1 - 0.6 depth
        weight = 1.0 - 0.6 * np.arange(length, dtype=np.float32) / max(length - 1, 1)
        weight = weight.reshape([-1 if a == axis else 1 for a in range(3)])
        shade = (occupied * weight).max(axis=axis + 1)
        panel = np.where(shade[..., None] > 0, shade[..., None] * VOXEL_COLOUR, PANEL).astype(np.uint8)
        panels.append(_upscale(panel, scale))
    height = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 0), (0, height - p.shape[1]), (0, 0), (0, 0)), constant_values=BACKGROUND)
              for p in panels]
    if mesh:
        panels.append(np.stack([_mesh_view(v, height) for v in occupied]))
    spacer = np.full((len(values), height, gap, 3), BACKGROUND, np.uint8)
    return np.concatenate([x for p in panels for x in (p, spacer)][:-1], axis=2)


def _mesh_view(occupied: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 matplotlib render of the marching-cubes surface of one occupancy grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    figure = Figure(figsize=(size / 100, size / 100), dpi=100, facecolor=(PANEL / 255,) * 3)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1), projection="3d", facecolor=(PANEL / 255,) * 3)
    axes.set_axis_off()
    padded = np.pad(occupied.astype(np.float32), 1)  # closes surfaces that touch the border
    if padded.max() > 0:
        vertices, faces, _, _ = marching_cubes(padded, level=0.5)
        axes.add_collection3d(Poly3DCollection(vertices[faces], facecolors=VOXEL_COLOUR / 255, linewidths=0,
                                               shade=True))
    limit = padded.shape[0]
    axes.set(xlim=(0, limit), ylim=(0, limit), zlim=(0, limit))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_fields(values, domain: Domain, nrow: Optional[int] = None, *, cmap: Optional[str] = "default",
                  scale: Optional[int] = None, padding: int = 2, view: Optional[tuple[float, float]] = None,
                  mesh: bool = False) -> Image.Image:
    """A grid picture (RGB PIL image) of full fields `values` (B, N, C) in [-1, 1] (numpy or torch) on `domain`.

    Grid 2-D and Rays (rendered views): the images (grey for 1 channel, unless `cmap`). Sphere / LatLon: per field an equirectangular map
    and an orthographic globe centred at `view` = (lat, lon) degrees (default: the south pole for Sphere, where
    projected images sit; 20N 0E for LatLon); 1-channel LatLon fields use 'coolwarm'. Grid 3-D: three
    depth-shaded max-projections of the occupancy (value > 0), plus a marching-cubes render when `mesh`.
    `scale` is the integer nearest-neighbour zoom (None: enough for tiles of a few dozen pixels); `nrow` fields
    per row (None: a square grid); `cmap` a matplotlib colormap name, None for grey, "default" per domain.
    """
    values = np.asarray(values.detach().cpu().float() if hasattr(values, "detach") else values, np.float32)
    if values.ndim != 3 or values.shape[1] != domain.num_points:
        raise ValueError(f"render_fields wants full fields (B, {domain.num_points}, C) on {domain.name}"
                         f"{list(domain.shape)}, got {values.shape}; pass the domain at the values' resolution")
    if cmap == "default":
        cmap = DEFAULT_CMAPS.get(domain.name)
    gap = max(padding, 2)
    if domain.kind in ("grid2d", "rays"):  # a view's rays are its pixels
        scale = scale or max(1, math.ceil(MIN_TILE["image"] / max(domain.shape)))
        images = colorize(values, cmap).reshape(len(values), *domain.shape, 3)
        tiles = _upscale(images, scale)
    elif isinstance(domain, (Sphere, LatLon)):
        scale = scale or max(1, math.ceil(MIN_TILE[domain.name] / domain.shape[0]))
        tiles = _spherical_tiles(values, domain, cmap, scale, tuple(view or DEFAULT_VIEWS[domain.name]), gap)
    elif isinstance(domain, Grid):
        scale = scale or max(1, math.ceil(MIN_TILE["voxels"] / max(domain.shape)))
        tiles = _voxel_tiles(values, domain, scale, gap, mesh)
    else:
        raise ValueError(f"render_fields draws Grid (2-D, 3-D), Rays, Sphere and LatLon fields, not {domain.name}")
    return Image.fromarray(tile_images(tiles, nrow, padding))
