"""The Blender-synthetic loader, the procedural scene generator behind the offline scene, and the scene DataModule."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.cameras import rays_from_poses
from datamodules.scene import OFFICIAL_8_VIEWS, PosedViews, SceneDataModule
from datamodules.sources.blender import BlenderScene
from datamodules.sources.procedural_scenes import (
    EVAL_SCENE, HELD_OUT_DISTANCE, ProceduralScene, hard_negative_scene, intersect, render, scene_distance, scene_spec,
    write_scene)
from datamodules.view_pairs import EncoderScenes, SceneViewPairs, ViewPairsDataModule, paste_floaters


@pytest.fixture
def scene_dir(tmp_path):
    folder = tmp_path / "nerf_synthetic" / "toy"
    write_scene(folder, scene_spec(*EVAL_SCENE), size=16, num_views={"train": 5, "val": 2, "test": 3}, seed=0)
    return folder


def load(folder, **kwargs):
    return BlenderScene("toy", data_dir=str(folder), test_skip=1, **kwargs).splits()


def test_the_loader_round_trips_the_generator_and_its_rays_hit_the_geometry(tmp_path):
    source = ProceduralScene("eval_0", size=32, num_train=6, num_val=1, num_test=2, data_root=str(tmp_path))
    assert (tmp_path / "procedural" / "eval_0_32" / "transforms_train.json").is_file()
    views = PosedViews(source)
    train = views.views("train")
    primitives = scene_spec(*EVAL_SCENE)
    rgba, depth = render(primitives, train.poses, 32, 32, views.domain.focal)
    composited = rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]
    np.testing.assert_allclose(train.images, composited, atol=1.5 / 255)  # PNG quantisation only
    rays = rays_from_poses(torch.from_numpy(train.poses), views.domain).reshape(-1, 6).double().numpy()
    t, which, _ = intersect(primitives, rays[:, :3], rays[:, 3:])
    alpha = train.alpha.reshape(-1)
    covered, empty = alpha > 0.999, alpha < 0.001
    assert covered.sum() > 500 and empty.sum() > 500
    assert (which[covered] >= 0).mean() > 0.99 and (which[empty] < 0).all()
    written = np.stack([np.asarray(Image.open(source.root / "train" / f"r_{i}_depth.png")) for i in range(6)]) / 1000
    error = np.abs(t - written.reshape(-1))[covered & (which >= 0)]  # the centre ray vs the mean of 2x2 samples
    assert np.median(error) < 0.005 and np.quantile(error, 0.95) < 0.05
    again = ProceduralScene("eval_0", size=32, num_train=6, num_val=1, num_test=2, data_root=str(tmp_path))
    np.testing.assert_array_equal(again.splits()["train"].images, train.images)  # read back, not redrawn


def test_scenes_are_deterministic_and_the_encoder_scenes_avoid_the_evaluation_scene():
    assert scene_spec("encoder", 3) == scene_spec("encoder", 3) and scene_spec("eval", 0) == scene_spec(*EVAL_SCENE)
    held_out = scene_spec(*EVAL_SCENE)
    distances = [scene_distance(scene_spec("encoder", i), held_out) for i in range(300)]
    assert min(distances) > HELD_OUT_DISTANCE
    assert scene_distance(held_out, held_out) == 0.0
    for scene in (held_out, scene_spec("encoder", 0)):
        hues = [p.colour for p in scene]
        assert len(set(hues)) == len(hues) and 3 <= len(scene) <= 4


def test_half_resolution_averages_straight_rgba_then_composites_on_white(scene_dir):
    full, half = load(scene_dir, half_res=False)["train"], load(scene_dir, half_res=True)["train"]
    assert half.images.shape == (5, 8, 8, 3) and half.focal == pytest.approx(full.focal / 2)
    rgba = np.asarray(Image.open(scene_dir / "train" / "r_0.png"), dtype=np.float32) / 255
    block = rgba[:2, 2:4].reshape(-1, 4).mean(0)
    expected = block[:3] * block[3] + 1 - block[3]
    np.testing.assert_allclose(half.images[0, 0, 1], expected, atol=1e-6)
    assert half.names == [f"r_{i}" for i in range(5)]


def test_every_bad_input_is_a_clear_error(scene_dir):
    meta = json.loads((scene_dir / "transforms_train.json").read_text())

    def rewrite(**changes):
        (scene_dir / "transforms_train.json").write_text(json.dumps({**meta, **changes}))

    with pytest.raises(FileNotFoundError, match="Blender-synthetic scene 'toy' not found"):
        BlenderScene("toy", data_dir=str(scene_dir.parent / "absent"))
    (scene_dir / "transforms_val.json").rename(scene_dir / "moved.json")
    with pytest.raises(FileNotFoundError, match="transforms_val.json is missing"):
        load(scene_dir)
    (scene_dir / "moved.json").rename(scene_dir / "transforms_val.json")
    without_angle = {k: v for k, v in meta.items() if k != "camera_angle_x"}
    (scene_dir / "transforms_train.json").write_text(json.dumps(without_angle))
    with pytest.raises(ValueError, match="transforms_train.json has no 'camera_angle_x'"):
        load(scene_dir)
    sheared = json.loads(json.dumps(meta))
    sheared["frames"][2]["transform_matrix"][0][1] += 0.5
    rewrite(frames=sheared["frames"])
    with pytest.raises(ValueError, match="transforms_train.json frame 2: the pose is not a rigid"):
        load(scene_dir)
    rewrite(frames=meta["frames"] + [{"file_path": "./train/r_99", "transform_matrix": meta["frames"][0]
                                      ["transform_matrix"]}])
    with pytest.raises(FileNotFoundError, match="r_99.png is missing"):
        load(scene_dir)
    rewrite()
    Image.new("RGBA", (12, 16)).save(scene_dir / "train" / "r_1.png")
    with pytest.raises(ValueError, match="r_1.png is 12x16 but r_0 of the same split is 16x16"):
        load(scene_dir)
    Image.new("RGB", (16, 16)).save(scene_dir / "train" / "r_1.png")
    with pytest.raises(ValueError, match="r_1.png has no alpha channel.*white_background=false"):
        load(scene_dir)
    assert load(scene_dir, white_background=False)["train"].images.shape == (5, 8, 8, 3)  # half resolution
    Image.fromarray(np.zeros((16, 16), np.uint16)).save(scene_dir / "train" / "r_1.png")
    with pytest.raises(ValueError, match="8-bit"):
        load(scene_dir, white_background=False)


def test_the_datamodule_yields_posed_views_and_checks_the_view_ids(tmp_path):
    source = ProceduralScene("eval_0", size=8, num_train=100, num_val=2, num_test=3, data_root=str(tmp_path))
    datamodule = SceneDataModule(PosedViews(source), "eval_0", train_views=OFFICIAL_8_VIEWS)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.coords.shape == (1, 64, 6) and batch.values.shape == (1, 64, 3) and batch.domain.kind == "rays"
    assert datamodule.view_names("train") == [f"r_{i}" for i in OFFICIAL_8_VIEWS]
    assert datamodule.view_names("test") == ["r_0", "r_1", "r_2"] and len(datamodule.train_images()) == 8
    test_batch = next(iter(datamodule.test_dataloader()))
    poses = torch.from_numpy(datamodule.field_maker.views("test").poses[:1])
    torch.testing.assert_close(test_batch.coords[:1], rays_from_poses(poses, datamodule.domain))
    with pytest.raises(ValueError, match=r"data.train_views \[100, 120\] are no views of .* which has 100"):
        SceneDataModule(PosedViews(source), "eval_0", train_views=[0, 100, 120])
    with pytest.raises(ValueError, match=r"repeats view \[3\]"):
        SceneDataModule(PosedViews(source), "eval_0", train_views=[3, 4, 3])
    with pytest.raises(ValueError, match="near < far"):
        PosedViews(source, near=6.0, far=2.0)


def test_hard_negatives_keep_the_colours_but_not_their_placement():
    scene, rng = scene_spec("encoder", 0), np.random.default_rng(0)
    recoloured = hard_negative_scene(scene, ("recolour",), rng)
    assert sorted(p.colour for p in recoloured) == sorted(p.colour for p in scene)
    assert all(a.colour != b.colour and (a.kind, a.centre, a.size) == (b.kind, b.centre, b.size)
               for a, b in zip(recoloured, scene))
    moved = hard_negative_scene(scene, ("move",), rng)
    assert all(a.colour == b.colour and a.centre != b.centre for a, b in zip(moved, scene))
    assert scene_distance(recoloured, scene_spec(*EVAL_SCENE)) > HELD_OUT_DISTANCE
    with pytest.raises(ValueError, match="hard-negative kinds"):
        hard_negative_scene(scene, ("shuffle",), rng)


def test_view_pairs_with_hard_negatives_put_each_copy_next_to_its_scene():
    source = EncoderScenes(num_train=2, num_val=2, num_test=2, size=16, hard_negatives=["recolour"])
    datamodule = ViewPairsDataModule(SceneViewPairs(source), batch_size=8)
    datamodule.setup()
    images = next(iter(datamodule.val_dataloader())).to_dense()  # view 1 of scene 2, its copy, 3, its copy; then view 2
    again = next(iter(datamodule.val_dataloader())).to_dense()
    torch.testing.assert_close(images, again)  # val items are fixed
    item = torch.from_numpy(source.render_item(2, torch.Generator().manual_seed(2))).permute(0, 3, 1, 2) * 2 - 1
    torch.testing.assert_close(images[[0, 4, 1, 5]], item)
    with pytest.raises(ValueError, match="multiple of 4"):
        ViewPairsDataModule(SceneViewPairs(source), batch_size=6)


def test_floaters_are_soft_blobs_of_the_scenes_colours_on_an_otherwise_untouched_view():
    scene = scene_spec("encoder", 0)
    white = np.ones((16, 32, 32, 3), np.float32)
    pasted = paste_floaters(white, scene, np.random.default_rng(0))
    assert pasted.shape == white.shape and pasted.dtype == white.dtype and 0 <= pasted.min() <= pasted.max() <= 1
    changed = np.abs(pasted - white).max(-1) > 0.05
    assert (np.abs(pasted - white).max((1, 2, 3)) > 0.3).all()  # every view gets a visible floater
    assert changed.mean((1, 2)).max() < 0.6  # and keeps most of its pixels
    # a blob mixes white with a darkened colour of the scene: with one pure red primitive, green = blue <= red
    red = paste_floaters(white, [replace(scene[0], colour=(1.0, 0.0, 0.0))], np.random.default_rng(1))
    np.testing.assert_allclose(red[..., 1], red[..., 2], atol=1e-6)
    assert (red[..., 0] >= red[..., 1] - 1e-6).all() and red[..., 1].min() < 0.5
    source = EncoderScenes(num_train=2, num_val=2, num_test=2, size=16, hard_negatives=["floaters"])
    item = source.render_item(0, torch.Generator().manual_seed(0))
    assert item.shape == (4, 16, 16, 3)
    with pytest.raises(ValueError, match=r"unknown kinds \['smudge'\]"):
        EncoderScenes(hard_negatives=["floaters", "smudge"])
