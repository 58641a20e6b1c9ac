"""PSNR, SSIM and LPIPS-VGG (checked against torchmetrics' LPIPS on the same random VGG16)."""
import numpy as np
import pytest
import torch

from evaluation.views import LPIPSVGG, _vgg16_features, lpips, psnr, ssim


def test_psnr_closed_form_and_uint8_input():
    target = np.full((2, 4, 4, 3), 0.5)
    pred = target + np.array([0.1, 0.01])[:, None, None, None]
    np.testing.assert_allclose(psnr(pred, target).numpy(), [20.0, 40.0], rtol=1e-9)
    assert torch.isinf(psnr(target, target)).all()
    as_uint8 = np.full((4, 4, 3), 100, dtype=np.uint8)
    assert psnr(as_uint8 + 1, as_uint8).item() == pytest.approx(20 * np.log10(255))


def test_ssim_matches_skimage_and_is_one_on_identical_images():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 16, 16, 3)), rng.random((2, 16, 16, 3))
    expected = [structural_similarity(x, y, channel_axis=-1, data_range=1.0) for x, y in zip(a, b)]
    np.testing.assert_allclose(ssim(a, b).numpy(), expected)
    np.testing.assert_allclose(ssim(a, a).numpy(), 1.0)


def test_view_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="map \\[-1, 1\\]"):
        psnr(-np.ones((4, 4, 3)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))


@pytest.fixture(scope="module")
def random_vgg16_weights(tmp_path_factory):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        features = _vgg16_features()
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path, features


def test_lpips_matches_torchmetrics_on_the_same_backbone(random_vgg16_weights, monkeypatch):
    import torchmetrics.functional.image.lpips as tm_lpips

    path, features = random_vgg16_weights
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: features)
    reference = tm_lpips._LPIPS(pretrained=True, net="vgg")
    model = LPIPSVGG(path)
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 32, 32, 3)), rng.random((3, 32, 32, 3))
    to_input = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() * 2 - 1  # noqa: E731
    expected = reference(to_input(a), to_input(b)).flatten().double()
    torch.testing.assert_close(lpips(a, b, model), expected, rtol=1e-4, atol=1e-6)
    assert torch.all(lpips(a, a, model) == 0)
    # the official DietNeRF code's convention: the [0, 1] images fed as they are
    unit01 = reference(*(torch.from_numpy(x).permute(0, 3, 1, 2).float() for x in (a, b))).flatten().double()
    torch.testing.assert_close(lpips(a, b, model, lpips_input="unit01"), unit01, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(unit01, expected)
    with pytest.raises(ValueError, match="unit01"):
        lpips(a, b, model, lpips_input="01")


def test_lpips_without_local_weights_says_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPSVGG(tmp_path / "absent.pth")


def test_score_views_names_lpips_by_its_input_convention(random_vgg16_weights):
    from datamodules.fields import FieldBatch, Grid
    from evaluation.views import ViewRenderer, score_views

    class Darker(ViewRenderer):
        def render_views(self, rays):
            return {"rgb": (rays.values + 1) / 4}

    views = [FieldBatch.from_values(torch.linspace(-1, 1, 2 * 256 * 3).reshape(2, 256, 3), Grid((16, 16)))]
    model = LPIPSVGG(random_vgg16_weights[0])
    signed, _ = score_views(Darker(), views, ["lpips"], "cpu", model)
    unit01, _ = score_views(Darker(), views, ["lpips"], "cpu", model, lpips_input="unit01")
    assert set(signed) == {"test/lpips[vgg]"} and set(unit01) == {"test/lpips[vgg,unit01]"}
    assert signed["test/lpips[vgg]"] != unit01["test/lpips[vgg,unit01]"]


def test_score_views_renders_each_held_out_view_and_writes_its_pictures(tmp_path):
    from datamodules.fields import FieldBatch, Grid
    from evaluation.report import save_renders
    from evaluation.views import ViewRenderer, score_views

    class OffByATenth(ViewRenderer):  # renders every view 0.1 brighter than it is, with a depth ramp
        def render_views(self, rays):
            rgb = ((rays.values + 1) / 2 + 0.1).clamp(0, 1)
            return {"rgb": rgb, "depth": rays.coords[..., :1], "acc": torch.ones_like(rgb[..., :1])}

    domain = Grid((8, 8))
    views = [FieldBatch.from_values(torch.full((2, 64, 3), -0.5), domain)]  # grey 0.25 everywhere
    scores, renders = score_views(OffByATenth(), views, ["psnr", "ssim"], "cpu")
    assert scores["test/psnr"] == pytest.approx(20.0) and len(renders) == 2
    assert renders[0]["rgb"].shape == (8, 8, 3) and renders[0]["psnr"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="lpips_weights=PATH"):
        score_views(OffByATenth(), views, ["lpips"], "cpu")
    with pytest.raises(TypeError, match="no ViewRenderer"):
        score_views(object(), views, ["psnr"], "cpu")
    save_renders(tmp_path, renders, names=["r_0", "r_1"])
    assert {p.name for p in (tmp_path / "renders").iterdir()} == {"r_0.png", "r_1.png"}
    assert (tmp_path / "depth" / "r_1.png").exists() and (tmp_path / "acc" / "r_0.png").exists()
