"""Procedural scenes of coloured analytic primitives, rendered by their own ray-caster into the Blender-synthetic
format (datamodules/sources/blender.py), so that NeRF and DietNeRF run here with no data download.

A scene is 3-4 spheres and boxes (boxes turned about the vertical axis) with distinct colours, diffusely lit by
a fixed light (view-independent colour), inside the unit ball; it is fixed by (family, index). The evaluation
scene is ("eval", 0); the encoder's scenes are ("encoder", i), redrawn until they lie farther than
HELD_OUT_DISTANCE from the evaluation scene in parameter space (`scene_distance`), so no near-copy of it is ever
seen by the encoder. The ray-caster shares nothing with NeRF's renderer: it intersects the primitives exactly,
with 2x2 samples per pixel placed around the pixel position of the camera convention (datamodules/cameras.py).
"""
from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from datamodules.cameras import look_at_origin
from datamodules.sources.blender import BlenderScene
from datamodules.sources.files import default_data_root

CAMERA_ANGLE_X = 0.6911112070083618  # the Blender-synthetic scenes' field of view
CAMERA_RADIUS = 4.0
LIGHT = np.array([0.4, 0.3, 0.87]) / np.linalg.norm([0.4, 0.3, 0.87])
AMBIENT = 0.35
HELD_OUT_DISTANCE = 0.6  # encoder scenes lie farther than this from the evaluation scene (scene_distance)
EVAL_SCENE = ("eval", 0)


@dataclass(frozen=True)
class Primitive:
    """kind "sphere" (size[0] is the radius) or "box" (size: half-extents, turned by `angle` radians about z)."""

    kind: str
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    colour: tuple[float, float, float]
    angle: float = 0.0


def _draw_centre(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.append(rng.uniform(-0.6, 0.6, 2), rng.uniform(-0.4, 0.4)))


def _draw_scene(rng: np.random.Generator) -> list[Primitive]:
    count = int(rng.integers(3, 5))
    hues = []
    while len(hues) < count:  # distinct colours: hues at least 0.12 apart on the circle
        hue = float(rng.uniform())
        if all(min(abs(hue - h), 1 - abs(hue - h)) > 0.12 for h in hues):
            hues.append(hue)
    primitives = []
    for hue in hues:
        kind = "sphere" if rng.uniform() < 0.5 else "box"
        extent = rng.uniform(0.3, 0.6, 3)
        size = (float(extent[0]),) * 3 if kind == "sphere" else tuple(float(e) for e in extent)
        centre = _draw_centre(rng)
        colour = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0))
        primitives.append(Primitive(kind, centre, size, tuple(float(c) for c in colour),
                                    float(rng.uniform(0, math.pi / 2)) if kind == "box" else 0.0))
    return primitives


def _primitive_distance(a: Primitive, b: Primitive) -> float:
    if a.kind != b.kind:
        return math.inf
    return float(np.linalg.norm(np.subtract(a.centre, b.centre)) + np.linalg.norm(np.subtract(a.size, b.size))
                 + np.linalg.norm(np.subtract(a.colour, b.colour)))


def scene_distance(scene: list[Primitive], reference: list[Primitive]) -> float:
    """How far `scene` is from `reference` in parameter space: the mean over the reference's primitives of the
    distance (centre + size + colour) to the nearest primitive of the same kind in `scene` (inf when none)."""
    return float(np.mean([min(_primitive_distance(r, p) for p in scene) for r in reference]))


def scene_spec(family: str, index: int) -> list[Primitive]:
    """The primitives of scene `index` of `family` ("eval" or "encoder"); deterministic."""
    seed = [zlib.crc32(family.encode()), index]
    if family == "eval":
        return _draw_scene(np.random.default_rng(seed))
    if family != "encoder":
        raise ValueError(f"procedural scene families are 'eval' and 'encoder', got {family!r}")
    held_out = scene_spec(*EVAL_SCENE)
    for attempt in range(1000):
        scene = _draw_scene(np.random.default_rng([*seed, attempt]))
        if scene_distance(scene, held_out) > HELD_OUT_DISTANCE:
            return scene
    raise RuntimeError(f"no encoder scene {index} outside the held-out region after 1000 draws")


HARD_NEGATIVE_KINDS = ("recolour", "move")


def hard_negative_scene(primitives: list[Primitive], kinds: tuple[str, ...], rng: np.random.Generator
                        ) -> list[Primitive]:
    """The scene with its colour composition kept but not its layout: "recolour" deals its colours out again so
    every primitive gets another one's, "move" redraws every centre; redrawn until it lies outside the evaluation
    scene's held-out region, as every encoder scene does."""
    unknown = set(kinds) - set(HARD_NEGATIVE_KINDS)
    if unknown or not kinds:
        raise ValueError(f"hard-negative kinds are a non-empty subset of {HARD_NEGATIVE_KINDS}, got {list(kinds)}")
    held_out = scene_spec(*EVAL_SCENE)
    for attempt in range(1000):
        colours = [p.colour for p in primitives]
        if "recolour" in kinds:
            order = rng.permutation(len(primitives))
            while (order == np.arange(len(primitives))).any():  # a derangement: no primitive keeps its colour
                order = rng.permutation(len(primitives))
            colours = [colours[i] for i in order]
        centres = ([_draw_centre(rng) for _ in primitives] if "move" in kinds else [p.centre for p in primitives])
        scene = [replace(p, colour=colour, centre=centre) for p, colour, centre in zip(primitives, colours, centres)]
        if scene_distance(scene, held_out) > HELD_OUT_DISTANCE:
            return scene
    raise RuntimeError(f"no hard negative ({list(kinds)}) outside the held-out region after 1000 draws")


def intersect(primitives: list[Primitive], origins: np.ndarray, directions: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays (R, 3), (R, 3) -> depth t of the first hit (R,) (inf on a miss), the hit primitive's index (R,) (-1)
    and the surface normal there (R, 3)."""
    best = np.full(len(origins), np.inf)
    which = np.full(len(origins), -1)
    normals = np.zeros_like(origins)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, primitive in enumerate(primitives):
            centre = np.asarray(primitive.centre)
            if primitive.kind == "sphere":
                offset = origins - centre
                a = (directions * directions).sum(-1)
                b = (offset * directions).sum(-1)
                c = (offset * offset).sum(-1) - primitive.size[0] ** 2
                t = (-b - np.sqrt(b * b - a * c)) / a  # nan on a miss
                normal = offset + t[:, None] * directions
            else:
                cos, sin = math.cos(primitive.angle), math.sin(primitive.angle)
                rotation = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])  # box frame -> world
                local_o, local_d = (origins - centre) @ rotation, directions @ rotation
                half = np.asarray(primitive.size)
                t1, t2 = (-half - local_o) / local_d, (half - local_o) / local_d
                near, far = np.minimum(t1, t2), np.maximum(t1, t2)
                t = near.max(-1)
                t = np.where(far.min(-1) >= np.maximum(t, 0), t, np.nan)
                axis = near.argmax(-1)
                normal = np.zeros_like(local_d)
                normal[np.arange(len(axis)), axis] = -np.sign(local_d[np.arange(len(axis)), axis])
                normal = normal @ rotation.T
            hit = (t > 0) & (t < best)
            best, which = np.where(hit, t, best), np.where(hit, k, which)
            normals[hit] = normal[hit] / np.linalg.norm(normal[hit], axis=-1, keepdims=True)
    return best, which, normals


def render(primitives: list[Primitive], poses: np.ndarray, height: int, width: int, focal: float,
           samples_per_axis: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Straight RGBA (V, H, W, 4) float in [0, 1] and camera depth (V, H, W) (0 where nothing is hit) of views
    at camera-to-world `poses`, averaging samples_per_axis^2 rays per pixel."""
    s = samples_per_axis
    sub = (np.arange(s) + 0.5) / s - 0.5  # sample offsets around the convention's pixel position
    rows = (np.arange(height)[:, None] + sub[None, :]).reshape(-1)
    cols = (np.arange(width)[:, None] + sub[None, :]).reshape(-1)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")  # (H s, W s)
    camera = np.stack([(cc - width / 2) / focal, -(rr - height / 2) / focal, -np.ones_like(rr)], -1).reshape(-1, 3)
    colours = np.array([p.colour for p in primitives])
    rgba, depths = [], []
    for pose in np.asarray(poses, dtype=np.float64):
        directions = camera @ pose[:3, :3].T
        t, which, normal = intersect(primitives, np.broadcast_to(pose[:3, 3], directions.shape), directions)
        hit = which >= 0
        shade = AMBIENT + (1 - AMBIENT) * np.clip(normal @ LIGHT, 0, None)
        colour = np.where(hit[:, None], colours[which] * shade[:, None], 0.0)
        blocks = lambda x: x.reshape(height, s, width, s, -1).sum(axis=(1, 3))  # noqa: E731
        hits = blocks(hit[:, None].astype(np.float64))
        straight = blocks(colour) / np.maximum(hits, 1)
        depths.append((blocks(np.where(hit, t, 0.0)[:, None]) / np.maximum(hits, 1))[..., 0])
        rgba.append(np.concatenate([straight, hits / s ** 2], -1))
    return np.stack(rgba).clip(0, 1), np.stack(depths)


def hemisphere_poses(num_views: int, rng: np.random.Generator, radius: float = CAMERA_RADIUS) -> np.ndarray:
    """(V, 4, 4) cameras at `radius` looking at the origin, area-uniform on the upper hemisphere above 5 degrees."""
    azimuth = rng.uniform(-math.pi, math.pi, num_views)
    elevation = np.arcsin(rng.uniform(math.sin(math.radians(5)), math.sin(math.radians(85)), num_views))
    position = radius * np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                  np.sin(elevation)], -1)
    return look_at_origin(position).numpy()


def write_scene(folder: Path, primitives: list[Primitive], size: int, num_views: dict[str, int], seed: int) -> None:
    """A Blender-format scene: transforms_<split>.json, <split>/r_<i>.png (RGBA), r_<i>_depth.png (16-bit camera
    depth in 1/1000 units) and r_<i>_mask.png, and generator.json (what was drawn)."""
    rng = np.random.default_rng(seed)
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    for split, count in num_views.items():
        poses = hemisphere_poses(count, rng)
        rgba, depth = render(primitives, poses, size, size, focal)
        (folder / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(count):
            stem = folder / split / f"r_{i}"
            Image.fromarray(np.rint(rgba[i] * 255).astype(np.uint8), "RGBA").save(f"{stem}.png")
            Image.fromarray(np.rint(depth[i] * 1000).astype(np.uint16)).save(f"{stem}_depth.png")
            Image.fromarray(np.rint(rgba[i, ..., 3] * 255).astype(np.uint8), "L").save(f"{stem}_mask.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": poses[i].tolist()})
        (folder / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}, indent=1))


class ProceduralScene(BlenderScene):
    """The procedural scene "<family>_<index>" (e.g. "eval_0", the evaluation scene) read as a Blender-synthetic
    one from <data_root>/procedural/<family>_<index>_<size>, written there first when absent (seconds)."""

    def __init__(self, scene: str = "eval_0", size: int = 64, num_train: int = 100, num_val: int = 8,
                 num_test: int = 25, data_root: Optional[str] = None):
        family, _, index = scene.rpartition("_")
        if not index.isdigit():
            raise ValueError(f"a procedural scene is named <family>_<index> (eval_0, encoder_12), got {scene!r}")
        index = int(index)
        root = Path(data_root).expanduser() if data_root is not None else default_data_root()
        name = f"{family}_{index}_{size}"
        folder = root / "procedural" / name
        record = {"family": family, "index": index, "size": size,
                  "views": {"train": num_train, "val": num_val, "test": num_test},
                  "primitives": [asdict(p) for p in scene_spec(family, index)]}
        record_path = folder / "generator.json"
        if not record_path.is_file():  # written beside, then renamed: a reader never sees half a scene
            staging = folder.with_name(f"{name}.tmp{os.getpid()}")
            write_scene(staging, scene_spec(family, index), size, record["views"], seed=zlib.crc32(name.encode()))
            (staging / "generator.json").write_text(json.dumps(record, indent=1))
            try:
                os.replace(staging, folder)
            except OSError:  # another process wrote it first
                shutil.rmtree(staging)
        elif json.loads(record_path.read_text()) != json.loads(json.dumps(record)):
            raise ValueError(f"{folder} holds another procedural scene than the one asked for ({record_path} "
                             "differs); delete the folder to regenerate it")
        super().__init__(name, data_root=str(root), dataset_dir="procedural", half_res=False, test_skip=1)
