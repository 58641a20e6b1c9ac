"""NeRF's LitModule: the ray batch through the shared sampler (with the pre-crop), the collapse guard, the lr law."""
import pytest
import torch

from datamodules.cameras import HemispherePoses, rays_from_poses
from datamodules.fields import FieldBatch, Rays
from lightning_modules.nerf import CollapsedRunError, NeRF

DOMAIN = Rays((16, 16), focal=20.0)
NET = {"position_frequencies": 2, "direction_frequencies": 1, "depth": 2, "width": 8, "skips": []}


def make_nerf(**overrides) -> NeRF:
    torch.manual_seed(0)
    kwargs = dict(net=NET, rays_per_step=32, num_coarse=8, num_fine=4, precrop_steps=3, domain=DOMAIN.spec(),
                  signal_dim=3, num_levels=None, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
    return NeRF(**{**kwargs, **overrides})


def view_batch(count: int = 1) -> FieldBatch:
    rays = rays_from_poses(HemispherePoses().sample(count, torch.Generator().manual_seed(0)), DOMAIN)
    return FieldBatch(coords=rays, values=torch.rand(count, DOMAIN.num_points, 3) * 2 - 1, domain=DOMAIN)


def test_early_ray_batches_come_from_the_centre_crop_only(monkeypatch):
    nerf = make_nerf().train()
    drawn = []
    original = nerf.ray_sampler.__call__

    def spy(batch, generator=None, candidates=None):
        subset = original(batch, generator, candidates)
        drawn.append(subset.index)
        return subset

    monkeypatch.setattr(nerf, "ray_sampler", spy)
    monkeypatch.setattr(NeRF, "global_step", property(lambda self: self._step), raising=False)
    for nerf._step in (0, 5):
        losses = nerf.compute_losses(view_batch(2))
        assert losses["loss"].shape == (2,) and torch.isfinite(losses["loss"]).all()
    crop = set(DOMAIN.centre_crop(0.5).tolist())
    assert set(drawn[0].flatten().tolist()) <= crop
    assert not set(drawn[1].flatten().tolist()) <= crop  # after precrop_steps: the whole view (32 of 256 rays)
    assert all(len(set(row.tolist())) == 32 for row in drawn[1])  # distinct rays per view


def test_a_collapsed_field_is_reported_or_restarted():
    nerf = make_nerf(collapse={"min_acc": 1e-3, "patience": 3, "action": "raise"})
    nerf.check_collapse(0.5)
    for _ in range(2):
        nerf.check_collapse(0.0)
    with pytest.raises(CollapsedRunError, match="mean accumulation 0.00e\\+00 < 0.001 for 3 steps"):
        nerf.check_collapse(0.0)
    restarting = make_nerf(collapse={"min_acc": 1e-3, "patience": 2, "action": "restart", "max_restarts": 1})
    with torch.no_grad():
        restarting.coarse.trunk[0].weight.fill_(7.0)
    restarting.check_collapse(0.0)
    restarting.check_collapse(0.0)
    assert restarting.restarts == 1 and not (restarting.coarse.trunk[0].weight == 7.0).any()
    restarting.check_collapse(0.0)
    with pytest.raises(CollapsedRunError, match="action=restart"):
        restarting.check_collapse(0.0)  # out of restarts


def test_sampled_views_are_renders_from_the_pose_law_and_the_lr_decays_like_the_official_code():
    nerf = make_nerf(lr_decay_steps=100).eval()
    views = nerf.sample(2, generator=torch.Generator().manual_seed(4))
    poses = HemispherePoses().sample(2, torch.Generator().manual_seed(4))
    torch.testing.assert_close(views.coords, rays_from_poses(poses, DOMAIN))
    torch.testing.assert_close(views.values, nerf.render_views(views)["rgb"] * 2 - 1)
    assert nerf.sample(1, resolution=(32, 32)).domain.focal == 40.0
    scheduler = nerf.configure_optimizers()["lr_scheduler"]["scheduler"]
    for _ in range(50):
        scheduler.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 0.1 ** 0.5)
    with pytest.raises(ValueError, match="method.rays_per_step=1000 is more points than the field has"):
        make_nerf(rays_per_step=1000)
