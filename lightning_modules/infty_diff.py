"""∞-Diff (Bond-Taylor & Willcocks 2023): mollified diffusion trained on random pixel subsets with sparse neural
operators, sampled at any resolution from one checkpoint.

Training (official code): x_t = T(sqrt(a_bar) x0 + sqrt(1 - a_bar) xi) on the dense training grid, with T the
DCT Gaussian blur (std in training pixels), target T xi (prediction_type eps: the mollified noise, Eq. 46); the
network sees and the loss reads only a random subset of the pixels. Sampling at r x the training resolution: the
blur std becomes std r, white noise has per-pixel std r (`noise_scale`), the sparse kernels are resized, and the
final state T x0 is deblurred with a Wiener filter.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from datamodules.fields import Domain, FieldBatch
from datamodules.points import HaltonSubset, PointSubset
from evaluation.protocol import Capabilities
from lightning_modules.base import DomainNotSupportedError
from lightning_modules.checkpointing import load_method
from lightning_modules.diffusion import GaussianDiffusion
from lightning_modules.diffusion.mollifier import GaussianBlur, WienerDeblur
from lightning_modules.diffusion_method import DiffusionMethod

POINT_SAMPLERS = ("uniform", "halton")
GUIDED_PREDICTIONS = ("eps", "x0", "v")


class InftyDiff(DiffusionMethod):
    """net: `networks.sparse_operator.SparseUNO` arguments (signal and training sizes come from the data).
    point_subset: {count: fraction in (0, 1] or a number of pixels, sampler: uniform | halton} of each training
        image (the paper's 1/4, uniform without replacement).
    mollifier_std: the blur std in training-resolution pixels (the paper's "variance 1.0"); inv_snr: the Wiener
        filter's default (official 0.05; per call: sample(inv_snr=...)).
    guidance_scale: lambda of reconstruction guidance (Ho et al. 2022) for completion and super-resolution.

    Diffusion autoencoder (the paper's headline runs, `net.latent_dim` > 0): the encoder reads the clean image at a
    fresh, independent pixel subset; decoder and encoder train jointly, their gradients clipped separately
    (official), and the EMA callback averages the encoder with the decoder (the official code keeps no encoder EMA).
    Unconditional samples then need latents from the latent DDPM (`InftyDiffLatent`); `reconstruct` decodes the
    latent of given images at any resolution.
    """

    method_name = "infty_diff"
    capabilities = Capabilities(domains=("grid2d",), resolution_free=True, completion=True)
    channel_dim = 1

    def __init__(self, net: dict, point_subset: dict, mollifier_std: float = 1.0, inv_snr: float = 0.05,
                 guidance_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if self.diffusion.learns_variance:
            raise ValueError(f"variance_type={self.diffusion.variance_type!r} is learned, but ∞-Diff's network sees "
                             "sparse points and a mollified process has no tractable bound; set "
                             "method.diffusion.variance_type=fixed_small (or fixed_large)")
        WienerDeblur(self.domain.shape, mollifier_std, inv_snr)  # checks std and inv_snr now, at config time
        if mollifier_std == 0 and self.diffusion.prediction_type == "eps":
            raise ValueError(f"method.mollifier_std={mollifier_std}: predicting mollified noise needs a blur "
                             "(std > 0 training pixels; the paper's is 1.0)")
        if guidance_scale < 0:
            raise ValueError(f"method.guidance_scale={guidance_scale} must be >= 0 (0: no reconstruction guidance)")
        self.mollifier_std, self.inv_snr, self.guidance_scale = mollifier_std, inv_snr, guidance_scale
        self.diffusion = self.process_for((self.domain.shape, inv_snr))
        self.point_subset = self._point_subset(**point_subset)
        self.point_subset.count_for(self.domain.num_points)
        self.net = instantiate(net, signal_dim=self.signal_dim, out_dim=self.signal_dim,
                               train_size=self.domain.shape[0])

    def _point_subset(self, count=0.25, sampler: str = "uniform") -> PointSubset:
        name = "method.point_subset.count"
        if sampler == "uniform":
            return PointSubset(count, name=name)
        if sampler == "halton":
            return HaltonSubset(count, self.domain.shape, name=name)
        raise ValueError(f"unknown method.point_subset.sampler {sampler!r}; valid: {', '.join(POINT_SAMPLERS)}")

    @classmethod
    def check_domain(cls, domain: Domain) -> None:
        super().check_domain(domain)
        if domain.shape[0] != domain.shape[1]:
            raise DomainNotSupportedError(f"∞-Diff's grid network needs square images, got {list(domain.shape)}; "
                                          "resize the data (data.field_maker.resolution=N)")

    def process_for(self, key) -> GaussianDiffusion:
        """The mollified process on a (shape, inv_snr) grid: blur std and white-noise std scaled by r."""
        shape, inv_snr = key
        ratio = shape[0] / self.domain.shape[0]
        std = self.mollifier_std * ratio
        return self.build_diffusion(operator=GaussianBlur(shape, std), decode=WienerDeblur(shape, std, inv_snr),
                                    noise_scale=ratio)

    # ---- training --------------------------------------------------------------------------------------------------
    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        x0 = batch.to_dense()
        shape = self.domain.shape
        index = self.point_subset.draw(x0.shape[0], self.domain.num_points, x0.device)

        def subset(dense: torch.Tensor) -> torch.Tensor:
            points = self.domain.from_dense(dense)
            return torch.gather(points, 1, index.unsqueeze(-1).expand(-1, -1, points.shape[-1]))

        z = None
        if self.net.latent_dim:  # the encoder's own subset of the clean image, drawn independently (official)
            z = self.encode_points(x0, self.point_subset.draw(x0.shape[0], self.domain.num_points, x0.device))

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(x_t, index, shape, t, z)

        return self.diffusion.training_losses(denoise, x0, self.sample_timesteps(x0.shape[0]), subset=subset)

    def encode_points(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The autoencoder's z of dense clean images (B, C, H, W) read at lattice `index` (B, m)."""
        points = images.flatten(2).transpose(1, 2)
        values = torch.gather(points, 1, index.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
        return self.net.encode(values, index, tuple(images.shape[-2:]))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """With an encoder, decoder and encoder gradients are clipped each to the norm (official train loop)."""
        if self.net.encoder is None or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        encoder = set(map(id, self.net.encoder.parameters()))
        decoder = [p for p in self.parameters() if id(p) not in encoder]
        for group in (list(self.net.encoder.parameters()), decoder):
            torch.nn.utils.clip_grad_norm_(group, gradient_clip_val)

    # ---- sampling --------------------------------------------------------------------------------------------------
    def dense_denoiser(self, domain: Domain, z: Optional[torch.Tensor] = None) -> Callable:
        """The network on every pixel of `domain`'s grid, as a map of dense (B, C, H, W) tensors (conditioned on
        the autoencoder's z when it has one)."""
        index = torch.arange(domain.num_points, device=self.device)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            values = self.net(domain.from_dense(x), index.expand(x.shape[0], -1), domain.shape, t, z)
            return domain.to_dense(values, domain.shape)

        return denoise

    def _latents(self, latents: Optional[torch.Tensor], num_samples: int) -> Optional[torch.Tensor]:
        if not self.net.latent_dim:
            if latents is not None:
                raise ValueError("latents were given, but this model has no autoencoder (method.net.latent_dim=0)")
            return None
        if latents is None:
            raise ValueError("a diffusion autoencoder's samples need latents z: train its latent DDPM "
                             "(experiment=infty_diff_<data>_latent method.autoencoder_ckpt=THIS_CHECKPOINT) and sample "
                             "that checkpoint, or pass latents= (reconstruct() encodes given images)")
        if latents.shape != (num_samples, self.net.latent_dim):
            raise ValueError(f"latents must be ({num_samples}, {self.net.latent_dim}), got {tuple(latents.shape)}")
        return latents.to(self.device)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False, inv_snr: Optional[float] = None, latents: Optional[torch.Tensor] = None,
               **sampler_overrides) -> FieldBatch:
        """Wiener-deblurred samples on `resolution` (any; default the training one); with the autoencoder, decoded
        from `latents` (B, latent_dim)."""
        z = self._latents(latents, num_samples)
        domain = self.sampling_domain(resolution)
        shape = (num_samples, self.signal_dim, *domain.shape)
        x0 = self.run_sampler(self.dense_denoiser(domain, z), shape, generator=generator, progress=progress,
                              process=(domain.shape, self.inv_snr if inv_snr is None else inv_snr),
                              **sampler_overrides)
        return FieldBatch.from_dense(x0.clamp(-1, 1), domain)

    @torch.no_grad()
    def encode(self, fields: FieldBatch) -> torch.Tensor:
        """The autoencoder's z (B, latent_dim) of training-resolution fields, read at every pixel."""
        if fields.domain.shape != self.domain.shape:
            raise ValueError(f"the encoder reads fields at the training resolution {list(self.domain.shape)}, got "
                             f"{list(fields.domain.shape)}")
        index = torch.arange(self.domain.num_points, device=self.device).expand(fields.values.shape[0], -1)
        return self.encode_points(fields.to_dense().to(self.device), index)

    @torch.no_grad()
    def sampling_inputs(self, fields: Iterable[FieldBatch], num_samples: int) -> dict:
        """With the autoencoder, the encoder's latents of the first `num_samples` data fields (as `reconstruct`)."""
        if not self.net.latent_dim:
            return {}
        latents = torch.cat([self.encode(batch) for batch in fields])[:num_samples]
        if len(latents) < num_samples:
            raise ValueError(f"sampling decodes the latents of {num_samples} data fields, but the data gave "
                             f"{len(latents)}; sample fewer fields (benchmark.sample_batch_size=...)")
        return {"latents": latents}

    def reconstruct(self, fields: FieldBatch, resolution=None, generator: Optional[torch.Generator] = None,
                    progress: bool = False, **sampler_overrides) -> FieldBatch:
        """Encode training-resolution fields and decode their z at `resolution` (official generate_recons)."""
        return self.sample(fields.values.shape[0], generator=generator, resolution=resolution, progress=progress,
                           latents=self.encode(fields), **sampler_overrides)

    def guided(self, denoise: Callable, measure: Callable, target: torch.Tensor, scale: float) -> Callable:
        """Reconstruction guidance (Ho et al. 2022, the paper's inpainting): the estimate of T x0 is moved against
        the gradient in x_t of ||measure(estimate) - target||^2, x0' = x0 - scale sqrt(a_bar) / 2 grad, and returned
        in the network's parameterisation."""
        prediction = self.diffusion.prediction_type
        if prediction not in GUIDED_PREDICTIONS:
            raise ValueError(f"reconstruction guidance needs prediction_type in {GUIDED_PREDICTIONS}, got "
                             f"{prediction!r}")
        alphas_cumprod = torch.as_tensor(self.diffusion.original.alphas_cumprod, device=self.device)

        def guided_denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1)
            with torch.enable_grad():
                x_t = x_t.detach().requires_grad_(True)
                output = denoise(x_t, t)
                x0 = {"eps": lambda: (x_t - (1 - a).sqrt() * output) / a.sqrt(), "x0": lambda: output,
                      "v": lambda: a.sqrt() * x_t - (1 - a).sqrt() * output}[prediction]()
                error = (measure(x0) - target).pow(2).sum()
                gradient, = torch.autograd.grad(error, x_t)
            x0 = (x0 - scale * a.sqrt() / 2 * gradient).detach()
            eps = (x_t.detach() - a.sqrt() * x0) / (1 - a).sqrt()
            return {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]

        return guided_denoise

    def complete(self, fields: FieldBatch, observed: torch.Tensor, generator: Optional[torch.Generator] = None,
                 progress: bool = False, guidance_scale: Optional[float] = None, **sampler_overrides) -> FieldBatch:
        """Inpainting: sample with reconstruction guidance towards T x at the observed pixels, which then keep
        their given values exactly."""
        domain = fields.domain
        x = fields.to_dense()
        mask = domain.to_dense(observed.unsqueeze(-1).to(x.dtype))
        target = mask * self.diffusion.operator(x)
        z = None
        if self.net.latent_dim:  # the encoder reads the observed pixels only (it takes any lattice subset)
            counts = observed.sum(1)
            if bool((counts != counts[0]).any()):
                raise ValueError("completion with the autoencoder needs the same number of observed pixels per field")
            index = torch.nonzero(observed.to(self.device), as_tuple=True)[1].view(observed.shape[0], -1)
            z = self.encode_points(x.to(self.device), index)
        denoise = self.guided(self.dense_denoiser(domain, z), lambda estimate: mask * estimate, target,
                              self.guidance_scale if guidance_scale is None else guidance_scale)
        sample = self.run_sampler(denoise, tuple(x.shape), generator=generator, progress=progress,
                                  process=(domain.shape, self.inv_snr), **sampler_overrides).clamp(-1, 1)
        return FieldBatch.from_dense(torch.where(mask.bool(), x, sample), domain)

    def super_resolve(self, images: torch.Tensor, factor: int, generator: Optional[torch.Generator] = None,
                      progress: bool = False, guidance_scale: Optional[float] = None,
                      **sampler_overrides) -> FieldBatch:
        """Images (B, C, h, w) at the training resolution or below -> samples at factor x h whose factor x factor
        averages match them (reconstruction guidance of the mollified estimate against the mollified image)."""
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"super-resolution factor must be an int >= 1, got {factor!r}")
        low = self.domain.at_resolution(tuple(images.shape[-2:]))
        domain = self.sampling_domain(low.shape[0] * factor)
        target = GaussianBlur(low.shape, self.mollifier_std * low.shape[0] / self.domain.shape[0])(images)
        denoise = self.guided(self.dense_denoiser(domain, self._encode_low_resolution(images)),
                              lambda estimate: F.avg_pool2d(estimate, factor), target,
                              self.guidance_scale if guidance_scale is None else guidance_scale)
        shape = (images.shape[0], self.signal_dim, *domain.shape)
        sample = self.run_sampler(denoise, shape, generator=generator, progress=progress,
                                  process=(domain.shape, self.inv_snr), **sampler_overrides)
        return FieldBatch.from_dense(sample.clamp(-1, 1), domain)

    def _encode_low_resolution(self, images: torch.Tensor) -> Optional[torch.Tensor]:
        """The autoencoder's z of low-resolution images (B, C, h, w): their pixels read as the regular subset of
        the training lattice at the centres of the s x s blocks they average, s = H_train / h (the paper passes the
        low-resolution image through the encoder)."""
        if not self.net.latent_dim:
            return None
        height, width = self.domain.shape
        stride = height // images.shape[-2]
        if stride * images.shape[-2] != height or stride * images.shape[-1] != width:
            raise ValueError(f"the encoder reads a low-resolution image as a subset of the {height}x{width} training "
                             f"lattice: its size {list(images.shape[-2:])} must divide it")
        rows = torch.arange(images.shape[-2], device=self.device) * stride + stride // 2
        cols = torch.arange(images.shape[-1], device=self.device) * stride + stride // 2
        index = (rows[:, None] * width + cols[None, :]).reshape(1, -1).expand(images.shape[0], -1)
        values = images.to(self.device).flatten(2).transpose(1, 2)
        return self.net.encode(values, index, self.domain.shape)


class InftyDiffLatent(DiffusionMethod):
    """Stage 2 of ∞-Diff's diffusion autoencoder (official train_latent_diffusion.py, DiffAE's latent DDPM): a DDPM
    over the frozen stage-1 encoder's latents, normalised per dimension; samples decode its latents with the
    stage-1 decoder at any resolution.

    autoencoder: the stage-1 `InftyDiff` method config (net.latent_dim > 0), rebuilt here; autoencoder_ckpt: its
    trained checkpoint, whose EMA weights are loaded when training starts from scratch (the weights then live in
    this module's checkpoints); net: `networks.latent_mlp.MLPSkipNet` arguments (latent_dim comes from the
    autoencoder). The loss is DiffAE's L1 on eps. Latent statistics (mean and std per dimension, fp32) are taken
    once over the training set and its horizontal flips before the first step (`configure_model`, so the EMA copy
    holds them). Sampler overrides of `sample` apply to the image decoder; the latent chain keeps `sampler`.
    """

    structural_hparams = ("domain", "signal_dim", "net", "diffusion", "autoencoder")

    def __init__(self, autoencoder: dict, net: dict, autoencoder_ckpt: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.autoencoder: InftyDiff = instantiate(autoencoder, domain=self.domain.spec(), signal_dim=self.signal_dim,
                                                  num_levels=self.num_levels, _recursive_=False)
        latent_dim = self.autoencoder.net.latent_dim
        if not latent_dim:
            raise ValueError("the latent DDPM needs a diffusion autoencoder: set method.autoencoder.net.latent_dim "
                             "> 0 (the paper's 1024), as in the stage-1 run")
        self.autoencoder.requires_grad_(False)
        self.net = instantiate(net, latent_dim=latent_dim)
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.zeros(latent_dim))  # 0: not yet measured
        self.autoencoder_ckpt = autoencoder_ckpt
        if autoencoder_ckpt is not None:
            self._load_autoencoder(autoencoder_ckpt)

    def _load_autoencoder(self, path: str) -> None:
        trained = load_method(path, use_ema=True)
        if not isinstance(trained, InftyDiff) or trained.net.latent_dim != self.autoencoder.net.latent_dim:
            raise ValueError(f"method.autoencoder_ckpt={path} is not a stage-1 ∞-Diff autoencoder with "
                             f"latent_dim={self.autoencoder.net.latent_dim}; train one with the same method.autoencoder "
                             "settings")
        try:
            self.autoencoder.load_state_dict(trained.state_dict())
        except RuntimeError as err:
            raise ValueError(f"method.autoencoder_ckpt={path} does not fit method.autoencoder (train stage 2 with "
                             f"the stage-1 run's method settings): {err}") from err

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"]["autoencoder_ckpt"] = None  # its weights are in this state dict

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen: no dropout in the encoder while the latent DDPM trains
        return self

    def configure_model(self) -> None:
        """Latent statistics over the training set and its flips, once (before the EMA callback copies us)."""
        if bool((self.latent_std > 0).all()) or self._trainer is None or self.trainer.datamodule is None:
            return
        if self.autoencoder_ckpt is None:
            raise ValueError("training the latent DDPM needs the stage-1 weights: method.autoencoder_ckpt=PATH")
        total, squares, count = 0.0, 0.0, 0
        for batch in self.trainer.datamodule.train_dataloader():
            dense = batch.to_dense().to(self.device)
            for images in (dense, dense.flip(-1)):
                z = self.autoencoder.encode(FieldBatch.from_dense(images, self.domain)).double()
                total, squares, count = total + z.sum(0), squares + z.pow(2).sum(0), count + z.shape[0]
        mean = total / count
        std = (squares / count - mean.pow(2)).clamp(min=0).sqrt()
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(std.clamp(min=1e-6).float())

    def compute_losses(self, batch: FieldBatch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            z = (self.autoencoder.encode(batch) - self.latent_mean) / self.latent_std
        t = self.sample_timesteps(z.shape[0])
        noise = torch.randn_like(z)
        error = (self.net(self.diffusion.q_sample(z, t, noise), t) - noise).abs().mean(-1)
        return {"loss": error, "l1": error}

    @torch.no_grad()
    def sample_latents(self, num_samples: int, generator: Optional[torch.Generator] = None,
                       progress: bool = False) -> torch.Tensor:
        """z (num_samples, latent_dim) from the latent DDPM, de-normalised."""
        if not bool((self.latent_std > 0).all()):
            raise ValueError("this latent DDPM has no latent statistics yet (train it first)")
        normalised = self.run_sampler(lambda z, t: self.net(z, t), (num_samples, self.net.out.out_features),
                                      generator=generator, progress=progress)
        return normalised * self.latent_std + self.latent_mean

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False, **decoder_overrides) -> FieldBatch:
        """Latents from the latent DDPM, decoded by the stage-1 decoder at `resolution` (any)."""
        return self.autoencoder.sample(num_samples, generator=generator, resolution=resolution, progress=progress,
                                       latents=self.sample_latents(num_samples, generator, progress),
                                       **decoder_overrides)


# Stage 2 stays out of the method registry (whose contract trains each method from its own tiny run: this one
# trains only on a stage-1 checkpoint; tests/experiments/test_infty_diff_autoencoder.py runs both stages) and
# reports itself as ∞-Diff.
InftyDiffLatent.method_name = InftyDiff.method_name
InftyDiffLatent.capabilities = Capabilities(domains=("grid2d",), resolution_free=True)
