"""Voxel readers on small files in the real formats (binvox RLE, .npy, meshes) and the procedural primitives."""
import re

import numpy as np
import pytest
import trimesh
from scipy.ndimage import binary_dilation

from datamodules.sources.errors import DatasetNotFoundError
from datamodules.sources.mesh_folder import MeshFolder, voxelize_in_cube, voxelize_mesh
from datamodules.sources.primitives import KINDS, Primitives
from datamodules.sources.voxels import VoxelFolder, read_binvox
from fake_datasets import write_binvox


def asymmetric_grid(size=8):
    """Occupied voxels that tell every axis apart: a long bar along x, a shorter one along y, a dot along z."""
    voxels = np.zeros((size,) * 3, bool)
    voxels[:, 0, 0] = True
    voxels[0, :4, 0] = True
    voxels[0, 0, 1] = True
    return voxels


def test_sources_binvox_round_trip_and_axis_order(tmp_path):
    voxels = asymmetric_grid()
    assert np.array_equal(read_binvox(write_binvox(tmp_path / "shape.binvox", voxels)), voxels)
    big = np.ones((12, 12, 12), bool)  # runs longer than 255 split into several pairs
    big[5, 6, 7] = False
    assert np.array_equal(read_binvox(write_binvox(tmp_path / "big.binvox", big)), big)


@pytest.mark.parametrize("seed", [0, 1])
def test_sources_binvox_agrees_with_trimesh_s_parser_and_writer(tmp_path, seed):
    """trimesh's binvox reader and writer as an independent reference (cubic grids, as binvox writes them; trimesh
    reads the dims of a non-cubic header in another order). Random occupancy tells the axes apart; a mostly full
    grid has runs over 255."""
    from trimesh.exchange.binvox import export_binvox, load_binvox
    from trimesh.voxel import VoxelGrid

    rng = np.random.default_rng(seed)
    for voxels in (rng.random((9, 9, 9)) < 0.3, rng.random((12, 12, 12)) < 0.995):
        ours = write_binvox(tmp_path / "ours.binvox", voxels)
        with open(ours, "rb") as f:
            assert np.array_equal(load_binvox(f).matrix, read_binvox(ours))
        theirs = tmp_path / "theirs.binvox"
        theirs.write_bytes(export_binvox(VoxelGrid(voxels)))
        assert np.array_equal(read_binvox(theirs), voxels)


def test_sources_binvox_corrupt(tmp_path):
    data = write_binvox(tmp_path / "good.binvox", asymmetric_grid()).read_bytes()
    cases = {"magic": b"#voxbin 1" + data[9:], "truncated": data[:-2], "odd number": data[:-1],
             "'data' line": data.replace(b"data\n", b"dat\n"), "dim": data.replace(b"dim 8 8 8", b"dim 8 8")}
    for message, content in cases.items():
        (tmp_path / "bad.binvox").write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_binvox(tmp_path / "bad.binvox")


def test_sources_voxel_folder_binvox_with_splits(tmp_path):
    for split, count in (("train", 3), ("test", 1)):
        for i in range(count):
            grid = np.roll(asymmetric_grid(), i, axis=1)
            write_binvox(tmp_path / split / f"model_{i}" / "models" / "model_normalized.solid.binvox", grid)
    folder = VoxelFolder(tmp_path)
    splits = folder.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "test": 1}
    assert folder.item_shape == (8, 8, 8) and (folder.channels, folder.num_levels) == (1, 2)
    assert np.array_equal(splits["train"][2], np.roll(asymmetric_grid(), 2, axis=1))


def test_sources_voxel_folder_npy(tmp_path):
    np.save(tmp_path / "a.npy", asymmetric_grid().astype(np.uint8))
    np.save(tmp_path / "b.npy", asymmetric_grid().astype(np.float32) * 0.9)
    folder = VoxelFolder(tmp_path, suffix=".npy")
    items = folder.splits()["all"]
    assert all(np.array_equal(items[i], asymmetric_grid()) for i in range(2))
    np.save(tmp_path / "c.npy", np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="c.npy.*differs"):
        folder.load(tmp_path / "c.npy")
    np.save(tmp_path / "d.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="3-D"):
        folder.load(tmp_path / "d.npy")


def test_sources_voxel_folder_absent(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"(?s){re.escape(str(tmp_path / 'shapenet'))}.*binvox"):
        VoxelFolder(tmp_path / "shapenet")
    with pytest.raises(ValueError, match="suffix"):
        VoxelFolder(tmp_path, suffix=".pt")


def test_sources_mesh_folder_voxelises_normalised_meshes(tmp_path):
    trimesh.creation.box(extents=(4.0, 2.0, 2.0)).export(tmp_path / "box.obj")
    trimesh.creation.icosphere(radius=3.0).apply_translation((10, 0, 0)).export(tmp_path / "ball.stl")
    trimesh.creation.box(extents=(1.0, 1.0, 1.0)).export(tmp_path / "cube.ply")
    folder = MeshFolder(tmp_path, resolution=16)
    items = {p.name: folder.splits()["all"][i] for i, p in enumerate(folder.splits()["all"].paths)}
    box = items["box.obj"]
    assert box.shape == (16, 16, 16) and box.all(axis=0).sum() == 64  # a 16 x 8 x 8 solid block
    assert box[:, 4:12, 4:12].all() and box.sum() == 16 * 8 * 8
    assert items["cube.ply"].all()
    ball = items["ball.stl"]
    assert ball[8, 8, 8] and not ball[0, 0, 0] and np.array_equal(ball, ball[::-1])  # centred despite the shift


def test_sources_mesh_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"(?s){re.escape(str(tmp_path))}.*\\.obj"):
        MeshFolder(tmp_path)
    (tmp_path / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n")
    with pytest.raises(ValueError, match="broken.off"):
        MeshFolder(tmp_path).splits()["all"][0]


def test_sources_primitives_seeded_shapes_inside_the_cube():
    primitives = Primitives(num_train=40, num_test=8, resolution=32, seed=3)
    splits = primitives.splits()
    assert splits["train"].shape == (40, 32, 32, 32) and splits["test"].shape == (8, 32, 32, 32)
    assert np.array_equal(splits["train"], Primitives(40, 8, 32, seed=3).splits()["train"])
    assert not np.array_equal(splits["train"], Primitives(40, 8, 32, seed=4).splits()["train"])
    assert set(primitives.params["train"].kind) == set(range(len(KINDS)))
    assert splits["train"].sum(axis=(1, 2, 3)).min() > 0
    border = np.ones((32,) * 3, bool)
    border[1:-1, 1:-1, 1:-1] = False  # outer voxel centres sit at +-0.96875, beyond the 0.95 margin
    assert not (splits["train"] & border).any()
    with pytest.raises(ValueError, match="kinds"):
        Primitives(kinds=("pyramid",))


def test_sources_primitives_match_their_trimesh_meshes():
    """The analytic occupancy (voxel centre inside) lies within trimesh's voxelisation (surface voxels included),
    which lies within one voxel of it."""
    primitives = Primitives(num_train=10, num_test=0, resolution=16, seed=5)
    voxels = primitives.splits()["train"]
    for i in range(10):
        reference = voxelize_in_cube(primitives.mesh("train", i), 16)
        assert not (voxels[i] & ~reference).any()
        assert not (reference & ~binary_dilation(voxels[i], np.ones((3, 3, 3)))).any()


def test_sources_voxelize_mesh_rejects_empty_meshes():
    with pytest.raises(ValueError, match="empty"):
        voxelize_mesh(trimesh.Trimesh(), 8)
