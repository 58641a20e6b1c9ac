"""Gaussian diffusion (Ho et al. 2020; Nichol & Dhariwal 2021): forward process, losses, samplers, bits/dim.

One object serves every diffusion method: values of any shape with the batch first ((B, C, H, W) images, (B, N, C)
fields), a `denoise_fn(x_t, t)` that is any callable, and 0-based timestep indices t (index 0 is the paper's t = 1).
An optional linear operator A runs the process in A's range (∞-Diff's mollified diffusion, Bond-Taylor & Willcocks
2023, App. B).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .losses import decoder_log_likelihood, mean_flat, normal_kl
from .schedules import get_named_beta_schedule

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
ValueMap = Callable[[Tensor], Tensor]

PREDICTION_TYPES = ("eps", "x0", "v", "mu")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")
LOSS_TYPES = ("mse", "kl", "hybrid")
SAMPLERS = ("ancestral", "ddim")
LEARNED_VARIANCES = ("learned", "learned_range")


def _check_choice(option: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {option} {value!r}; valid options: {', '.join(valid)}")


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion with float64 schedule tables.

    prediction_type: what denoise_fn predicts: "eps" (the noise), "x0", "v" (sqrt(a_bar) eps - sqrt(1 - a_bar) x0)
        or "mu" (the posterior mean mu~_t, Ho et al.'s mean parameterisation).
    variance_type: the reverse-process variance: "fixed_small" (posterior beta~_t), "fixed_large" (beta_t, with
        beta~_1 at t = 0 as in improved-diffusion), "learned" (denoise_fn outputs log sigma^2) or "learned_range"
        (Nichol & Dhariwal's interpolation between log beta~_t and log beta_t). A learned variance doubles
        denoise_fn's output along `channel_dim` (mean output first, variance output second).
    loss_type: "mse" (L_simple on the prediction target), "kl" (the variational bound) or "hybrid"
        (L_simple + hybrid_vb_weight * L_vlb with a stop-gradient on the mean in L_vlb). As in improved-diffusion,
        "mse" with a learned variance trains the variance through that same stop-gradient vb term, so it equals
        "hybrid"; "hybrid" with a fixed variance is rejected because its vb term would carry no gradient.
    num_levels: quantisation of the data on [-1, 1] for the discretised L_0 decoder (256 for 8-bit images);
        None for continuous data, where L_0 is a Gaussian density and bits/dim are undefined.
    logsnr_shift: added to the cosine schedule's log-SNR at every step (schedules.get_named_beta_schedule); < 0
        noises a larger field more, so that its coarse structure sees the SNR of a smaller one.
    betas: explicit (T,) betas; when given they override schedule, num_timesteps, beta_start, beta_end and
        logsnr_shift.
    operator: a linear, shape-preserving map A on value tensors (any callable, e.g. a blur), or None (identity).
        The process becomes x_t = sqrt(a_bar_t) A x0 + sqrt(1 - a_bar_t) A eps, with posterior
        N(coef1 A x0 + coef2 x_t, beta~_t A A^T), and every fresh noise draw of the samplers (x_T, ancestral and
        DDIM eta > 0 noise) is A eps. The methods that take data (q_sample, q_mean_variance,
        q_posterior_mean_variance, training_losses) apply A themselves; the rest works in A's range: the targets
        are A eps, A x0, v = sqrt(a_bar) A eps - sqrt(1 - a_bar) A x0 and mu~; pred_x0 and eps (p_mean_variance,
        predict_*, get_v) estimate A x0 and A eps; returned variances are factors of A A^T. clip_denoised clamps
        the estimate of A x0, right when A maps [-1, 1] into [-1, 1] (a positive, normalised kernel). The bound
        (loss_type kl / hybrid, learned variances, bits/dim) is refused: it needs A A^T's inverse and log-det.
    min_snr_gamma: Min-SNR-gamma loss weighting (Hang et al. 2023) of the "mse" term, or None (L_simple): each
        sample's MSE is scaled so that, in x0 units, the weight is min(SNR_t, gamma) (eps: / SNR_t, v: / (SNR_t + 1),
        x0: as is), which stops the nearly noiseless steps from dominating the gradient; gamma 5 is the paper's.
    decode: a map applied to the final sample of p_sample_loop, ddim_sample_loop and sample (e.g. a Wiener-filter
        deblur of A x0), or None; the progressive loops yield undecoded states (a chain one can resume).
    noise_scale: the std of the white noise eps that every draw of this object makes (q_sample and training
        without given noise, x_T, ancestral and DDIM noise): 1 for N(0, I). ∞-Diff sampling at r times the
        training resolution uses r, the per-pixel std of the same white noise on cells r^2 times smaller.
    respaced() keeps the operator, decode and class: it copies this object onto a subset of its steps.
    """

    def __init__(
        self,
        schedule: str = "linear",
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        logsnr_shift: float = 0.0,
        betas: Optional[np.ndarray] = None,
        prediction_type: str = "eps",
        variance_type: str = "fixed_small",
        loss_type: str = "mse",
        hybrid_vb_weight: float = 1e-3,
        min_snr_gamma: Optional[float] = None,
        num_levels: Optional[int] = 256,
        channel_dim: int = 1,
        operator: Optional[ValueMap] = None,
        decode: Optional[ValueMap] = None,
        noise_scale: float = 1.0,
    ):
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("loss_type", loss_type, LOSS_TYPES)
        if loss_type == "hybrid" and variance_type not in LEARNED_VARIANCES:
            raise ValueError(
                f"loss_type 'hybrid' trains a learned variance, but variance_type is {variance_type!r}; use "
                f"variance_type in {LEARNED_VARIANCES}, or loss_type 'mse' (L_simple) or 'kl' (the full bound)"
            )
        if hybrid_vb_weight < 0:
            raise ValueError(f"hybrid_vb_weight must be >= 0, got {hybrid_vb_weight}")
        if min_snr_gamma is not None and (loss_type != "mse" or prediction_type == "mu" or not min_snr_gamma > 0
                                          or variance_type in LEARNED_VARIANCES):
            raise ValueError(
                f"min_snr_gamma={min_snr_gamma} weights the MSE of an eps, x0 or v prediction by min(SNR, gamma) with "
                f"gamma > 0; got loss_type={loss_type!r}, prediction_type={prediction_type!r}, "
                f"variance_type={variance_type!r}: use loss_type 'mse' with prediction_type eps / x0 / v and a fixed "
                f"variance, or min_snr_gamma=null")
        if num_levels is not None and (not isinstance(num_levels, int) or num_levels < 2):
            raise ValueError(f"num_levels must be an int >= 2 (256 for 8-bit data) or None, got {num_levels!r}")
        if not isinstance(channel_dim, int):
            raise ValueError(f"channel_dim must be an int (1 for (B, C, H, W), -1 for (B, N, C)), got {channel_dim!r}")
        for name, value in (("operator", operator), ("decode", decode)):
            if value is not None and not callable(value):
                raise ValueError(f"{name} must be a callable on value tensors or None, got {type(value).__name__}")
        if operator is not None and (loss_type != "mse" or variance_type in LEARNED_VARIANCES):
            raise ValueError(
                f"with an operator the bound's Gaussians have covariance beta~ A A^T, whose inverse and "
                f"log-determinant this class does not compute, so loss_type={loss_type!r} with "
                f"variance_type={variance_type!r} cannot be trained; use loss_type 'mse' with variance_type "
                f"'fixed_small' or 'fixed_large'"
            )
        if not noise_scale > 0 or not math.isfinite(noise_scale):
            raise ValueError(f"noise_scale is the std of the white noise draws, a finite number > 0; got {noise_scale}")
        if logsnr_shift and schedule != "cosine":
            raise ValueError(f"logsnr_shift={logsnr_shift} moves the cosine schedule's log-SNR, but schedule is "
                             f"{schedule!r}; use schedule=cosine, or logsnr_shift=0")
        if betas is None:
            # cosine is defined by its alpha_bar curve, not by a beta range
            options = ({"logsnr_shift": logsnr_shift} if schedule == "cosine"
                       else {"beta_start": beta_start, "beta_end": beta_end})
            betas = get_named_beta_schedule(schedule, num_timesteps, **options)
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas must be a 1-D array of at least 2 steps, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("every beta must lie in (0, 1); clip the schedule (cosine uses max_beta=0.999)")

        self.prediction_type = prediction_type
        self.variance_type = variance_type
        self.loss_type = loss_type
        self.hybrid_vb_weight = hybrid_vb_weight
        self.min_snr_gamma = min_snr_gamma
        self.num_levels = num_levels
        self.channel_dim = channel_dim
        self.operator = operator
        self.decode = decode
        self.noise_scale = float(noise_scale)
        self.learns_variance = variance_type in LEARNED_VARIANCES
        self._set_betas(betas)
        # the process the network is trained on, and its step of each of this process's steps (respacing sets both)
        self.original = self
        self.timestep_map = np.arange(self.num_timesteps)

    def _set_betas(self, betas: np.ndarray) -> None:
        """Every float64 table derived from the betas (a subclass with tables of its own extends this)."""
        self.num_timesteps = len(betas)
        self.betas = betas
        self.log_betas = np.log(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(self.one_minus_alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # q(x_{t-1} | x_t, x_0), Ho et al. Eqs. 3.6-3.7 (x_t coefficient sqrt(alpha_t), not sqrt(alpha_bar_t))
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0: the log is clipped to beta~_1, the variance the t = 0 decoder uses
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.fixed_large_log_variance = np.log(np.append(self.posterior_variance[1], betas[1:]))
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        self._device_tables: dict[tuple[str, torch.device], Tensor] = {}

    # ------------------------------------------------------------------ tables

    def _table(self, name: str, device: torch.device) -> Tensor:
        """The numpy table `name` as a tensor on `device`, transferred once per device."""
        key = (name, device)
        if key not in self._device_tables:
            table = torch.from_numpy(getattr(self, name))
            if device.type == "mps" and table.dtype == torch.float64:
                table = table.float()  # MPS has no float64
            self._device_tables[key] = table.to(device)
        return self._device_tables[key]

    def _gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table `name` at timesteps t in the table's float64, shaped (B, 1, ..., 1) to broadcast against `like`."""
        values = self._table(name, like.device)[t.to(like.device)]
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def _extract(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table `name` at timesteps t, cast to like's dtype, shaped to broadcast against `like`."""
        return self._gather(name, t, like).to(like.dtype)

    def _check_timesteps(self, t: Tensor, x: Tensor) -> None:
        if not isinstance(t, Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool or t.shape != x.shape[:1]:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"t must be an integer tensor of shape ({x.shape[0]},) holding 0-based timestep indices in "
                f"[0, {self.num_timesteps}), one per batch element; got {shape}"
            )

    def _randn(self, shape: Sequence[int], like_device: torch.device, dtype: torch.dtype,
               generator: Optional[torch.Generator]) -> Tensor:
        if generator is not None and generator.device.type != like_device.type:
            raise ValueError(
                f"the generator is on {generator.device} but sampling runs on {like_device}; "
                f"make it with torch.Generator(device={str(like_device)!r}).manual_seed(seed)"
            )
        noise = torch.randn(tuple(shape), generator=generator, device=like_device, dtype=dtype)
        return noise if self.noise_scale == 1.0 else noise * self.noise_scale

    def _apply_operator(self, x: Tensor) -> Tensor:
        """A x (x itself without an operator)."""
        if self.operator is None:
            return x
        out = self.operator(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the operator must be linear and shape-preserving, but it mapped a tensor of shape "
                             f"{tuple(x.shape)} to {shape}")
        return out

    def _refuse_with_operator(self, what: str) -> None:
        if self.operator is not None:
            raise ValueError(
                f"{what} is undefined here with an operator: the bound's Gaussians have covariance beta~ A A^T, "
                f"whose inverse and log-determinant this class does not compute; evaluate a model without an "
                f"operator, or report sample metrics instead"
            )

    def _noise_like(self, x0: Tensor, noise: Optional[Tensor]) -> Tensor:
        if noise is None:
            noise = torch.randn_like(x0)
            return noise if self.noise_scale == 1.0 else noise * self.noise_scale
        if noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}")
        return noise

    # ------------------------------------------------------------------ forward process

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log-variance of q(x_t | x_0) = N(sqrt(a_bar_t) A x_0, (1 - a_bar_t) A A^T)."""
        self._check_timesteps(t, x0)
        mean = self._extract("sqrt_alphas_cumprod", t, x0) * self._apply_operator(x0)
        variance = self._extract("one_minus_alphas_cumprod", t, x0).expand_as(x0)
        log_variance = self._extract("log_one_minus_alphas_cumprod", t, x0).expand_as(x0)
        return mean, variance, log_variance

    def q_sample(self, x0: Tensor, t: Tensor, noise: Optional[Tensor] = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0): sqrt(a_bar_t) A x_0 + sqrt(1 - a_bar_t) A noise."""
        self._check_timesteps(t, x0)
        return self._apply_operator(self._diffuse(x0, t, self._noise_like(x0, noise)))  # one call: A is linear

    def _diffuse(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) noise, of values already in the operator's range."""
        return self._extract("sqrt_alphas_cumprod", t, x0) * x0 + self._extract(
            "sqrt_one_minus_alphas_cumprod", t, x0
        ) * noise

    def _posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return self._extract("posterior_mean_coef1", t, x_t) * x0 + self._extract("posterior_mean_coef2", t, x_t) * x_t

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of the forward posterior q(x_{t-1} | x_t, x_0)
        = N(coef1 A x_0 + coef2 x_t, beta~_t A A^T)."""
        self._check_timesteps(t, x_t)
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)} but x_t has {tuple(x_t.shape)}")
        mean = self._posterior_mean(self._apply_operator(x0), x_t, t)
        variance = self._extract("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ parameterisations

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - self._extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        ) * eps

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0) / self._extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def predict_x0_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        return self._extract("sqrt_alphas_cumprod", t, x_t) * x_t - self._extract(
            "sqrt_one_minus_alphas_cumprod", t, x_t
        ) * v

    def get_v(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """The v-prediction target sqrt(a_bar_t) eps - sqrt(1 - a_bar_t) x0 (Salimans & Ho 2022)."""
        return self._extract("sqrt_alphas_cumprod", t, x0) * eps - self._extract(
            "sqrt_one_minus_alphas_cumprod", t, x0
        ) * x0

    def _network_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The "mu" target: the original process's one-step posterior mean at its step, which a respaced process
        must not read as its own (longer) step's mean."""
        return self.original._posterior_mean(x0, x_t, self._table("timestep_map", t.device)[t])

    def _predict_x0_from_mean(self, x_t: Tensor, t: Tensor, mean: Tensor) -> Tensor:
        # inverts _network_mean = coef1 x0 + coef2 x_t; coef1 > 0 at every step
        original, t = self.original, self._table("timestep_map", t.device)[t]
        return (mean - original._extract("posterior_mean_coef2", t, x_t) * x_t) / original._extract(
            "posterior_mean_coef1", t, x_t
        )

    # ------------------------------------------------------------------ reverse process

    def _denoise(self, denoise_fn: DenoiseFn, x_t: Tensor, t: Tensor) -> Tensor:
        """The one place the network is called, with the original process's step indices it was trained on."""
        return denoise_fn(x_t, self._table("timestep_map", t.device)[t])

    def _split_output(self, output: Tensor, x_t: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """(prediction, variance output or None), after checking the output shape against x_t."""
        expected = list(x_t.shape)
        if self.learns_variance:
            expected[self.channel_dim] *= 2
        if list(output.shape) != expected:
            layout = (
                f"the prediction and the variance stacked along channel_dim={self.channel_dim}"
                if self.learns_variance
                else "x_t's shape"
            )
            raise ValueError(
                f"denoise_fn returned shape {tuple(output.shape)}, expected {tuple(expected)} "
                f"({layout}; variance_type={self.variance_type!r})"
            )
        if not self.learns_variance:
            return output, None
        prediction, variance_output = output.chunk(2, dim=self.channel_dim)
        return prediction, variance_output

    def _p_mean_variance_from_output(self, output: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool) -> dict:
        prediction, variance_output = self._split_output(output, x_t)
        if self.variance_type == "learned":
            log_variance = variance_output
        elif self.variance_type == "learned_range":
            fraction = (variance_output + 1.0) / 2.0  # the network's [-1, 1] output mapped to [0, 1]
            log_variance = fraction * self._extract("log_betas", t, x_t) + (1.0 - fraction) * self._extract(
                "posterior_log_variance_clipped", t, x_t
            )
        elif self.variance_type == "fixed_large":
            log_variance = self._extract("fixed_large_log_variance", t, x_t).expand_as(x_t)
        else:
            log_variance = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        variance = torch.exp(log_variance)

        if self.prediction_type == "mu":
            # the mean is the prediction itself (formed from its x0 when respaced); clipping only touches the
            # reported x0 (as in improved-diffusion)
            pred_x0 = self._predict_x0_from_mean(x_t, t, prediction)
            mean = prediction if self.original is self else self._posterior_mean(pred_x0, x_t, t)
        elif self.prediction_type == "eps":
            pred_x0 = self.predict_x0_from_eps(x_t, t, prediction)
        elif self.prediction_type == "v":
            pred_x0 = self.predict_x0_from_v(x_t, t, prediction)
        else:
            pred_x0 = prediction
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        if self.prediction_type != "mu":
            mean = self._posterior_mean(pred_x0, x_t, t)
        if self.prediction_type == "eps" and not clip_denoised:
            eps = prediction
        else:
            eps = self.predict_eps_from_x0(x_t, t, pred_x0)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_x0": pred_x0, "eps": eps}

    def p_mean_variance(self, denoise_fn: DenoiseFn, x_t: Tensor, t: Tensor, clip_denoised: bool = False) -> dict:
        """p(x_{t-1} | x_t): dict(mean, variance, log_variance, pred_x0, eps), each shaped like x_t.

        clip_denoised clamps pred_x0 to [-1, 1] before the mean is formed from it; eps is the noise consistent
        with the returned pred_x0 (what DDIM steps with).
        """
        self._check_timesteps(t, x_t)
        return self._p_mean_variance_from_output(self._denoise(denoise_fn, x_t, t), x_t, t, clip_denoised)

    # ------------------------------------------------------------------ losses

    def _mse_target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        if self.prediction_type == "eps":
            return noise
        if self.prediction_type == "x0":
            return x0
        if self.prediction_type == "v":
            return self.get_v(x0, noise, t)
        return self._network_mean(x0, x_t, t)

    def _min_snr_weight(self, t: Tensor) -> Tensor:
        """(B,) float32 weights on the prediction target's MSE giving x0-error weight min(SNR_t, gamma)."""
        snr = self._table("snr", t.device)[t]
        implicit = {"eps": snr, "v": snr + 1.0, "x0": torch.ones_like(snr)}[self.prediction_type]
        return (snr.clamp(max=self.min_snr_gamma) / implicit).float()

    def _vb_terms_from_output(self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool) -> dict:
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
        out = self._p_mean_variance_from_output(output, x_t, t, clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -mean_flat(
            decoder_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"], self.num_levels)
        ) / math.log(2.0)
        return {"output": torch.where(t.to(x0.device) == 0, decoder_nll, kl), "pred_x0": out["pred_x0"]}

    def vb_terms_bpd(
        self, denoise_fn: DenoiseFn, x0: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = True
    ) -> dict:
        """One term of the bound in bits per dimension: dict(output (B,), pred_x0).

        output is KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the decoder's -log p(x_0|x_1) at t = 0
        (a codelength for quantised data; a negative log-density when num_levels is None).
        """
        self._refuse_with_operator("the variational bound")
        self._check_timesteps(t, x_t)
        return self._vb_terms_from_output(self._denoise(denoise_fn, x_t, t), x0, x_t, t, clip_denoised)

    def training_losses(
        self, denoise_fn: DenoiseFn, x0: Tensor, t: Tensor, noise: Optional[Tensor] = None,
        subset: Optional[ValueMap] = None,
    ) -> dict[str, Tensor]:
        """Per-sample (B,) losses at timesteps t: always "loss"; "mse" when an MSE term exists; "vb" when a bound
        term exists.

        "mse" is the mean squared error to the target of prediction_type (eps, x0, v or mu~). "vb" is the bound's
        term L_t in bits/dim (vb_terms_bpd) at the sampled t, so for t ~ Uniform T * vb is an unbiased estimate of
        the bound without L_T: loss "kl" is T * vb, loss "hybrid" is mse + hybrid_vb_weight * T * vb (with the
        mean detached in vb), which with hybrid_vb_weight = 1e-3 and T = 1000 is improved-diffusion's mse + vb.

        subset: a map from values to the points the network sees and the loss is taken on (∞-Diff's random pixel
        subsets): x_t is formed on the full x0, where the operator acts, and denoise_fn gets subset(x_t); every
        later term is elementwise, so the targets are read at the same points.
        """
        self._check_timesteps(t, x0)
        # x_t and every target live in the operator's range: A x0, A noise (no-ops without an operator)
        x0, noise = self._apply_operator(x0), self._apply_operator(self._noise_like(x0, noise))
        x_t = self._diffuse(x0, t, noise)
        if subset is not None:
            x0, x_t, noise = subset(x0), subset(x_t), subset(noise)
        output = self._denoise(denoise_fn, x_t, t)
        if self.loss_type == "kl":
            vb = self._vb_terms_from_output(output, x0, x_t, t, clip_denoised=False)["output"]
            return {"loss": vb * self.num_timesteps, "vb": vb}

        prediction, variance_output = self._split_output(output, x_t)
        terms = {"mse": mean_flat((self._mse_target(x0, x_t, t, noise) - prediction) ** 2)}
        if variance_output is None:
            terms["loss"] = terms["mse"] if self.min_snr_gamma is None else self._min_snr_weight(t) * terms["mse"]
            return terms
        # stop-gradient on the mean: the bound trains only the variance, L_simple the mean (Nichol & Dhariwal 3.1)
        frozen_mean = torch.cat([prediction.detach(), variance_output], dim=self.channel_dim)
        terms["vb"] = self._vb_terms_from_output(frozen_mean, x0, x_t, t, clip_denoised=False)["output"]
        terms["loss"] = terms["mse"] + self.hybrid_vb_weight * self.num_timesteps * terms["vb"]
        return terms

    # ------------------------------------------------------------------ likelihood

    def prior_bpd(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, (B,); constant in the model."""
        self._refuse_with_operator("the prior term of the bound")
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, device=x0.device, dtype=torch.long)
        mean, _, log_variance = self.q_mean_variance(x0, t)
        return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / math.log(2.0)

    @torch.no_grad()
    def calc_bpd_loop(
        self,
        denoise_fn: DenoiseFn,
        x0: Tensor,
        clip_denoised: bool = True,
        progress: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> dict[str, Tensor]:
        """The full variational bound of quantised data in bits/dim, term by term.

        Returns total_bpd (B,) = prior_bpd + vb.sum(1); prior_bpd (B,) = L_T; and per timestep, column t holding
        step t (column 0 = L_0, the distortion; columns 1.. = the rate): vb (B, T) in bits/dim, xstart_mse (B, T)
        the MSE of pred_x0 on the [-1, 1] scale (RMSE on [0, 255] = 127.5 * sqrt), mse (B, T) the MSE of eps.
        """
        self._refuse_with_operator("bits/dim")
        if self.num_levels is None:
            raise ValueError(
                "bits/dim need quantised data: this diffusion has num_levels=None (continuous data); "
                "set num_levels to the data's number of levels (256 for 8-bit)"
            )
        vb, xstart_mse, eps_mse = [], [], []
        steps = range(self.num_timesteps)
        for step in self._progress(steps, progress):
            t = torch.full((x0.shape[0],), step, device=x0.device, dtype=torch.long)
            noise = self._randn(x0.shape, x0.device, x0.dtype, generator)
            x_t = self.q_sample(x0, t, noise=noise)
            terms = self.vb_terms_bpd(denoise_fn, x0, x_t, t, clip_denoised=clip_denoised)
            vb.append(terms["output"])
            xstart_mse.append(mean_flat((terms["pred_x0"] - x0) ** 2))
            eps_mse.append(mean_flat((self.predict_eps_from_x0(x_t, t, terms["pred_x0"]) - noise) ** 2))
        vb = torch.stack(vb, dim=1)
        prior_bpd = self.prior_bpd(x0)
        return {
            "total_bpd": vb.sum(dim=1) + prior_bpd,
            "prior_bpd": prior_bpd,
            "vb": vb,
            "xstart_mse": torch.stack(xstart_mse, dim=1),
            "mse": torch.stack(eps_mse, dim=1),
        }

    # ------------------------------------------------------------------ samplers

    def p_sample(
        self,
        denoise_fn: DenoiseFn,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> dict[str, Tensor]:
        """One ancestral step x_t -> x_{t-1} ~ p(x_{t-1} | x_t) (covariance sigma^2 A A^T): dict(sample, pred_x0);
        noiseless at t = 0."""
        out = self.p_mean_variance(denoise_fn, x, t, clip_denoised=clip_denoised)
        noise = self._apply_operator(self._randn(x.shape, x.device, x.dtype, generator))
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_x0": out["pred_x0"]}

    def ddim_sample(
        self,
        denoise_fn: DenoiseFn,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        eta: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> dict[str, Tensor]:
        """One DDIM step (Song et al. 2021, Eq. 12): dict(sample, pred_x0); eta = 0 deterministic, eta = 1 ancestral
        with the posterior variance beta~_t."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        out = self.p_mean_variance(denoise_fn, x, t, clip_denoised=clip_denoised)
        # coefficients in float64: 1 - a_bar_prev - sigma^2 cancels to ~0 near t = 0
        alpha_bar = self._gather("alphas_cumprod", t, x)
        alpha_bar_prev = self._gather("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev))
        eps_coef = torch.sqrt((1.0 - alpha_bar_prev - sigma**2).clamp(min=0.0))
        sample = torch.sqrt(alpha_bar_prev).to(x.dtype) * out["pred_x0"] + eps_coef.to(x.dtype) * out["eps"]
        if eta > 0:  # sigma is 0 at t = 0, where a_bar_prev = 1
            noise = self._apply_operator(self._randn(x.shape, x.device, x.dtype, generator))
            sample = sample + sigma.to(x.dtype) * noise
        return {"sample": sample, "pred_x0": out["pred_x0"]}

    @staticmethod
    def _progress(steps: Sequence[int], progress: bool):
        if not progress:
            return steps
        from tqdm.auto import tqdm  # imported lazily: only progress bars need it

        return tqdm(steps)

    def _reverse_loop(
        self,
        step_fn: Callable[..., dict],
        shape: Optional[Sequence[int]],
        noise: Optional[Tensor],
        progress: bool,
        generator: Optional[torch.Generator],
        device: Optional[Union[str, torch.device]],
        start_step: Optional[int],
        **step_kwargs,
    ) -> Iterator[dict]:
        """Checks the arguments and draws x_T now, so that bad input fails at the call, not at the first step."""
        if start_step is None:
            start_step = self.num_timesteps - 1
        elif noise is None:
            raise ValueError("start_step resumes a chain from a given x_t: pass that x_t as noise")
        if not 0 <= start_step < self.num_timesteps:
            raise ValueError(f"start_step must be in [0, {self.num_timesteps}), got {start_step}")
        if noise is not None:
            if shape is not None and tuple(noise.shape) != tuple(shape):
                raise ValueError(f"noise has shape {tuple(noise.shape)} but shape is {tuple(shape)}")
            x = noise
        else:
            if device is None:
                device = generator.device if generator is not None else torch.device("cpu")
            x = self._apply_operator(self._randn(shape, torch.device(device), torch.get_default_dtype(), generator))
        return self._iterate_steps(step_fn, x, start_step, progress, generator, step_kwargs)

    @torch.no_grad()
    def _iterate_steps(
        self, step_fn: Callable[..., dict], x: Tensor, start_step: int, progress: bool,
        generator: Optional[torch.Generator], step_kwargs: dict,
    ) -> Iterator[dict]:
        for step in self._progress(range(start_step, -1, -1), progress):
            t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
            out = step_fn(x=x, t=t, generator=generator, **step_kwargs)
            x = out["sample"]
            yield {"sample": x, "pred_x0": out["pred_x0"], "t": int(self.timestep_map[step])}

    def p_sample_loop_progressive(
        self,
        denoise_fn: DenoiseFn,
        shape: Sequence[int],
        noise: Optional[Tensor] = None,
        clip_denoised: bool = True,
        progress: bool = False,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
        start_step: Optional[int] = None,
    ) -> Iterator[dict]:
        """Ancestral sampling (Ho et al. Alg. 4), yielding dict(sample, pred_x0, t) after each step.

        t is the step's timestep in the original (unspaced) process. The chain starts from `noise` taken as x_T
        itself (else A eps, eps ~ N(0, I) drawn with `generator` on `device`) at the last step, or at start_step
        when given (then noise is that x_t: trajectory splitting, interpolation). The final step returns the
        mean, noiselessly. Samples are yielded undecoded (in the operator's range).
        """
        return self._reverse_loop(
            self.p_sample, shape, noise, progress, generator, device, start_step,
            denoise_fn=denoise_fn, clip_denoised=clip_denoised,
        )

    def p_sample_loop(self, denoise_fn: DenoiseFn, shape: Sequence[int], **kwargs) -> Tensor:
        """The final sample of p_sample_loop_progressive (same arguments), decoded."""
        return self._decoded(_last(self.p_sample_loop_progressive(denoise_fn, shape, **kwargs))["sample"])

    def ddim_sample_loop_progressive(
        self,
        denoise_fn: DenoiseFn,
        shape: Sequence[int],
        noise: Optional[Tensor] = None,
        clip_denoised: bool = True,
        progress: bool = False,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
        start_step: Optional[int] = None,
        eta: float = 0.0,
    ) -> Iterator[dict]:
        """DDIM sampling over this process's steps (respace first for fewer); yields like p_sample_loop_progressive."""
        return self._reverse_loop(
            self.ddim_sample, shape, noise, progress, generator, device, start_step,
            denoise_fn=denoise_fn, clip_denoised=clip_denoised, eta=eta,
        )

    def ddim_sample_loop(self, denoise_fn: DenoiseFn, shape: Sequence[int], **kwargs) -> Tensor:
        """The final sample of ddim_sample_loop_progressive (same arguments), decoded."""
        return self._decoded(_last(self.ddim_sample_loop_progressive(denoise_fn, shape, **kwargs))["sample"])

    def _decoded(self, sample: Tensor) -> Tensor:
        return sample if self.decode is None else self.decode(sample)

    def sample(
        self, denoise_fn: DenoiseFn, shape: Sequence[int], sampler: str = "ancestral", eta: float = 0.0, **kwargs
    ) -> Tensor:
        """Samples of `shape` with the named sampler ("ancestral" or "ddim"); kwargs go to the sampling loop."""
        _check_choice("sampler", sampler, SAMPLERS)
        if sampler == "ddim":
            return self.ddim_sample_loop(denoise_fn, shape, eta=eta, **kwargs)
        if eta != 0:
            raise ValueError(f"eta={eta} is a DDIM option; use sampler='ddim' or leave eta at 0")
        return self.p_sample_loop(denoise_fn, shape, **kwargs)

    def respaced(self, steps: Union[int, str, Sequence[int]]) -> GaussianDiffusion:
        """This process on a subset of its steps (see space_timesteps: 100, "ddim50", "10,20"): same class,
        settings, operator and decode."""
        from .respace import respace, space_timesteps  # respace builds on this module

        return respace(self, space_timesteps(self.num_timesteps, steps))


def _last(iterator: Iterator[dict]) -> dict:
    final = None
    for final in iterator:
        pass
    return final
