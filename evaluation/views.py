"""Novel-view metrics: PSNR, SSIM (scikit-image, as pixelNeRF/DietNeRF) and LPIPS-VGG from local weights, and
the interface a model of a scene implements to be scored on them.

Images are (N, H, W, C) or (H, W, C), uint8 or float in [0, 1]; every metric returns per-image values (N,).
"""
from __future__ import annotations

import importlib.resources
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import Tensor, nn

if TYPE_CHECKING:
    from datamodules.fields import FieldBatch

ImageArray = Union[np.ndarray, Tensor]


class ViewRenderer(ABC):
    """What evaluation needs from a model of a scene; a method whose capabilities say it renders views inherits it."""

    @abstractmethod
    def render_views(self, rays: "FieldBatch") -> dict[str, Tensor]:
        """Rays (B, N) of posed views -> {"rgb": (B, N, 3) in [0, 1]} and optionally "depth" and "acc" (B, N, 1)."""

# torchvision's vgg16().features layout: channels per conv, "M" for max-pool; LPIPS taps relu1_2 ... relu5_3
_VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_LPIPS_TAPS = (4, 9, 16, 23, 30)  # end index (exclusive) of each slice in vgg16().features
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def _to_float_images(images: ImageArray, name: str) -> Tensor:
    """(N, H, W, C) float64 in [0, 1] from uint8 or float input."""
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images).detach().cpu()
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"{name} must be (N, H, W, C) or (H, W, C), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.double() / 255
    images = images.double()
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"float {name} must lie in [0, 1], got [{float(images.min()):.3g}, {float(images.max()):.3g}]"
                         "; map [-1, 1] values with (x + 1) / 2")
    return images


def _pair(pred: ImageArray, target: ImageArray) -> tuple[Tensor, Tensor]:
    pred, target = _to_float_images(pred, "pred"), _to_float_images(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return pred, target


def psnr(pred: ImageArray, target: ImageArray) -> Tensor:
    """Per-image peak signal-to-noise ratio in dB for data range 1."""
    pred, target = _pair(pred, target)
    mse = (pred - target).square().flatten(1).mean(1)
    return -10 * torch.log10(mse)


def ssim(pred: ImageArray, target: ImageArray) -> Tensor:
    """Per-image SSIM with scikit-image's defaults (7x7 uniform window), as pixelNeRF's evaluation code."""
    pred, target = _pair(pred, target)
    # one call per image: skimage works on single images, and this matches the papers' numbers exactly
    return torch.tensor([structural_similarity(p.numpy(), t.numpy(), channel_axis=-1, data_range=1.0)
                         for p, t in zip(pred, target)], dtype=torch.float64)


def _vgg16_features() -> nn.Sequential:
    layers, channels = [], 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


class LPIPSVGG(nn.Module):
    """LPIPS (Zhang et al. 2018) on VGG16: unit-normalised activations at five depths, squared differences
    weighted by learned 1x1 linear layers, spatially averaged and summed."""

    # torchmetrics' LPIPS builds its VGG through torchvision, which does not install here; this module reads
    # torchvision-format VGG16 weights from a local file and torchmetrics' bundled linear layers.

    def __init__(self, backbone_weights: Union[str, Path], linear_weights: Optional[Union[str, Path]] = None):
        super().__init__()
        backbone_weights = Path(backbone_weights)
        if not backbone_weights.is_file():
            raise FileNotFoundError(
                f"LPIPS needs local VGG16 weights in torchvision format (vgg16-397923af.pth, keys 'features.N.*'); "
                f"{backbone_weights} does not exist. Download it on a connected machine from "
                "https://download.pytorch.org/models/vgg16-397923af.pth and pass its path.")
        self.features = _vgg16_features()
        state = torch.load(backbone_weights, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict(state)
        if linear_weights is None:
            linear_weights = importlib.resources.files("torchmetrics.functional.image") / "lpips_models" / "vgg.pth"
        linear = torch.load(linear_weights, map_location="cpu", weights_only=True)
        self.linear = nn.ParameterList([nn.Parameter(linear[f"lin{i}.model.1.weight"], requires_grad=False)
                                        for i in range(len(_LPIPS_CHANNELS))])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def _activations(self, x: Tensor) -> list[Tensor]:
        x, outputs, start = (x - self.shift) / self.scale, [], 0
        for end in _LPIPS_TAPS:
            x = self.features[start:end](x)
            outputs.append(x / (x.square().sum(1, keepdim=True) + 1e-8).sqrt())  # as torchmetrics
            start = end
        return outputs

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """(N, 3, H, W) images in [-1, 1] -> (N,) distances."""
        pairs = zip(self._activations(pred), self._activations(target), self.linear)
        return sum(F.conv2d((a - b).square(), weight).mean((1, 2, 3)) for a, b, weight in pairs)


# what LPIPS is fed: "signed" maps [0, 1] images to [-1, 1], LPIPS's own convention; "unit01" feeds [0, 1] as
# they are, as the official DietNeRF code does (run_nerf_helpers.py), which its paper's LPIPS numbers come from
LPIPS_INPUTS = ("signed", "unit01")


def lpips_metric_name(lpips_input: str = "signed") -> str:
    """The metric's name for that input convention: "test/lpips[vgg]" or "test/lpips[vgg,unit01]"."""
    return "test/lpips[vgg]" if lpips_input == "signed" else f"test/lpips[vgg,{lpips_input}]"


def lpips(pred: ImageArray, target: ImageArray, model: LPIPSVGG, batch_size: int = 32,
          lpips_input: str = "signed") -> Tensor:
    """Per-image LPIPS-VGG distance with a loaded `LPIPSVGG`, batched on the model's device; `lpips_input` is one
    of LPIPS_INPUTS."""
    if lpips_input not in LPIPS_INPUTS:
        raise ValueError(f"lpips_input is one of {LPIPS_INPUTS} ('unit01': the official DietNeRF code's [0, 1] "
                         f"input), got {lpips_input!r}")
    pred, target = _pair(pred, target)
    if pred.shape[-1] not in (1, 3):
        raise ValueError(f"LPIPS wants 1- or 3-channel images, got {pred.shape[-1]} channels")
    device = next(model.parameters()).device
    scale, shift = (2.0, -1.0) if lpips_input == "signed" else (1.0, 0.0)
    to_input = lambda x: (x.permute(0, 3, 1, 2).float().expand(-1, 3, -1, -1) * scale + shift).to(device)  # noqa: E731
    with torch.no_grad():
        return torch.cat([model(to_input(p), to_input(t)).double().cpu()
                          for p, t in zip(pred.split(batch_size), target.split(batch_size))])


@torch.no_grad()
def score_views(renderer: ViewRenderer, views, metrics, device, lpips_model: Optional[LPIPSVGG] = None,
                lpips_input: str = "signed") -> tuple[dict[str, float], list[dict[str, Tensor]]]:
    """Mean PSNR / SSIM / LPIPS of the renders of held-out views against their images, and each view's renders.

    views: batches (FieldBatch) of whole views: rays with their colours in [-1, 1] (the field contract), each
    field one view on an (H, W) domain; returns the means ("test/psnr", "test/ssim", "test/lpips[vgg]", named
    by lpips_metric_name for another `lpips_input`) and per view {"rgb" (H, W, 3) in [0, 1], optional "depth", "acc" (H, W)} plus its scores.
    """
    if not isinstance(renderer, ViewRenderer):
        raise TypeError(f"{type(renderer).__name__} does not render views (it is no ViewRenderer)")
    if "lpips" in metrics and lpips_model is None:
        raise ValueError("lpips needs local VGG16 weights: pass lpips_weights=PATH (torchvision's vgg16-397923af.pth)")
    scores, renders = {name: [] for name in metrics}, []
    for batch in views:
        batch = batch.to(device)
        out = renderer.render_views(batch)
        to_image = lambda x: batch.domain.to_dense(x.float()).permute(0, 2, 3, 1).cpu()  # noqa: E731
        pred, target = to_image(out["rgb"]).clamp(0, 1), to_image((batch.values + 1) / 2)
        per_view = {"psnr": lambda: psnr(pred, target), "ssim": lambda: ssim(pred, target),
                    "lpips": lambda: lpips(pred, target, lpips_model, lpips_input=lpips_input)}
        values = {name: per_view[name]() for name in metrics}
        for name in metrics:
            scores[name].append(values[name])
        extras = {key: to_image(out[key])[..., 0] for key in ("depth", "acc") if key in out}
        renders += [{"rgb": pred[i], **{key: extra[i] for key, extra in extras.items()},
                     **{name: float(values[name][i]) for name in metrics}} for i in range(len(pred))]
    names = {"psnr": "test/psnr", "ssim": "test/ssim", "lpips": lpips_metric_name(lpips_input)}
    return {names[name]: float(torch.cat(values).mean()) for name, values in scores.items()}, renders
