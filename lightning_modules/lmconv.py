"""LMConv PixelCNN (Jain, Abbeel, Pathak 2020; thesis ch. 2): an autoregressive image model in any pixel order."""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import torch
from hydra.utils import instantiate
from torch import Tensor

from datamodules.fields import FieldBatch
from evaluation.likelihood import ORDER_PREFIX, LikelihoodModel, ensemble_bpd
from evaluation.protocol import Capabilities
from lightning_modules.base import FieldGenerativeModule
from lightning_modules.sampling import HIDDEN_REGIONS, hidden_region
from networks.lmconv.likelihoods import LIKELIHOODS, check_on_grid
from networks.lmconv.masks import OrderMasks
from networks.lmconv.orders import expand_order_names, named_order, observed_first, puts_last, rank_of

log = logging.getLogger(__name__)

SAMPLER_OPTIONS = ("order", "mixture_temperature", "logistic_temperature")
LR_DECAY_INTERVALS = ("step", "epoch")


class LMConv(FieldGenerativeModule, LikelihoodModel):
    """Order-agnostic training over `orders`, exact bits/dim with the order ensemble, sampling and completion in
    any order.

    net: LocallyMaskedPixelCNN arguments (in/out channels come from the data and the likelihood).
    likelihood: {name: dmol, num_mixtures: 10} (any number of levels; grey or RGB) or {name: binary} (2 levels);
        options set to null are left out.
    orders: training orders, one drawn per batch (names of networks.lmconv.orders; a bare base name means its 8
        variants). eval_orders: the orders whose ensemble is `bpd` (null: the training orders); novel_orders:
        further orders scored alone (`bpd_novel/<name>`, e.g. raster on an S-curve model), outside the ensemble.
    conditional_regions: hidden regions (top, bottom, left, right, center) whose conditional NLL given the rest is
        reported, teacher-forced and without zeroing (`nll_hidden/<region>` in bits per hidden dim, ensembled over
        the eval orders that put the region last; `nll_hidden_order/<region>/<order>` per order).
    sampler: defaults of `sample`/`complete`: order (null: the first training order), mixture_temperature (divides
        the mixture logits), logistic_temperature (scales the logistic scales).
    lr_decay: {gamma, interval: step | epoch}: the learning rate times gamma per step or per epoch (the paper
        states per step; its numbers came from the authors' code, which decays per epoch).
    """

    method_name = "lmconv"
    capabilities = Capabilities(domains=("grid2d",), likelihood="exact", completion=True, orders=True)
    structural_hparams = ("domain", "signal_dim", "net", "likelihood")

    def __init__(self, net: dict, likelihood: dict, orders: Sequence[str], eval_orders: Optional[Sequence[str]] = None,
                 novel_orders: Sequence[str] = (), conditional_regions: Sequence[str] = (),
                 sampler: Optional[dict] = None, lr_decay: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if self.num_levels is None:
            raise ValueError("LMConv models discrete pixels; the data has continuous values (num_levels is None): "
                             "use image data with levels (e.g. data=digits)")
        # an option set to null is absent: a binary config switching from dmol nulls num_mixtures
        likelihood = {key: value for key, value in likelihood.items() if value is not None}
        kind = likelihood.pop("name", "dmol")
        if kind not in LIKELIHOODS:
            raise ValueError(f"unknown method.likelihood.name={kind!r}; valid: {', '.join(LIKELIHOODS)}")
        self.likelihood = LIKELIHOODS[kind](self.signal_dim, self.num_levels, **likelihood)
        self.net = instantiate(net, in_channels=self.signal_dim, out_channels=self.likelihood.num_params)
        self.train_orders = expand_order_names(orders)
        self.eval_orders = expand_order_names(eval_orders) if eval_orders else list(self.train_orders)
        self.novel_orders = list(novel_orders)
        for name in {*self.train_orders, *self.eval_orders, *self.novel_orders}:
            self.order(name)  # refuse a bad name, or a transpose of a non-square image, now
        self.conditional_orders = {region: self._max_context_orders(region) for region in conditional_regions}
        self.sampler_cfg = {"order": None, "mixture_temperature": 1.0, "logistic_temperature": 1.0, **(sampler or {})}
        self._check_sampler_options(self.sampler_cfg)
        self.lr_decay = {"gamma": 1.0, "interval": "step", **(lr_decay or {})}
        if self.lr_decay["interval"] not in LR_DECAY_INTERVALS or not 0 < self.lr_decay["gamma"] <= 1:
            raise ValueError(f"method.lr_decay needs gamma in (0, 1] and interval in {LR_DECAY_INTERVALS}, got "
                             f"{self.lr_decay}")
        self._masks: dict = {}

    # ---- orders and masks -----------------------------------------------------------------------------------------
    def order(self, name: str) -> Tensor:
        return named_order(name, *self.domain.shape)

    def masks(self, name: str) -> OrderMasks:
        """The order's mask sets on this module's device, computed once."""
        key = (name, str(self.device))
        if key not in self._masks:
            self._masks[key] = self._masks_of_rank(rank_of(self.order(name).to(self.device)))
        return self._masks[key]

    def _masks_of_rank(self, rank: Tensor) -> OrderMasks:
        return OrderMasks.of(rank, self.domain.shape, self.net.kernel_size, self.net.dilation)

    def _max_context_orders(self, region: str) -> list[str]:
        hidden = hidden_region(self.domain, region)
        chosen = [name for name in self.eval_orders if puts_last(self.order(name), hidden)]
        if not chosen:
            raise ValueError(
                f"conditional NLL of region {region!r}: none of the evaluated orders {self.eval_orders} generates it "
                f"last. Add an order that does to method.eval_orders (S-curve variants: top 1, 3; bottom 0, 2; left "
                f"6, 7; right 4, 5; center: center_quarter_last), trained on, or the number is not meaningful")
        return chosen

    # ---- likelihood -----------------------------------------------------------------------------------------------
    def pixel_log_probs(self, x: Tensor, masks: OrderMasks) -> Tensor:
        """log p of every pixel given the pixels before it in the order of `masks`: (B, H*W) nats, row-major."""
        check_on_grid(x, self.num_levels)
        return self.likelihood.log_prob(self.net(x, masks), x).flatten(1)

    def compute_losses(self, batch: FieldBatch) -> dict[str, Tensor]:
        x = batch.to_dense()
        # one random training order per batch (Eq. 2.6); evaluation scores the first, so its loss is comparable
        index = int(torch.randint(len(self.train_orders), ())) if self.training else 0
        nats = -self.pixel_log_probs(x, self.masks(self.train_orders[index])).sum(1)
        return {"loss": nats / (x[0].numel() * math.log(2))}

    @torch.no_grad()
    def bits_per_dim(self, batch: FieldBatch) -> dict[str, Tensor]:
        """`bpd_order/<name>` per eval order (ensembled into the total by evaluation.likelihood), `bpd_novel/<name>`,
        `nll_nats` (the ensemble in nats per image) and the conditional NLLs of the configured regions."""
        x = batch.to_dense()
        num_dims = x[0].numel()
        needed = dict.fromkeys([*self.eval_orders, *self.novel_orders])
        log_probs = {name: self.pixel_log_probs(x, self.masks(name)) for name in needed}  # (B, N) each
        to_bpd = lambda nats, dims: -nats / (dims * math.log(2))  # noqa: E731
        result = {f"{ORDER_PREFIX}{name}": to_bpd(log_probs[name].sum(1), num_dims) for name in self.eval_orders}
        result.update({f"bpd_novel/{name}": to_bpd(log_probs[name].sum(1), num_dims) for name in self.novel_orders})
        ensemble = ensemble_bpd(torch.stack([result[f"{ORDER_PREFIX}{name}"] for name in self.eval_orders]), num_dims)
        result["nll_nats"] = ensemble * num_dims * math.log(2)
        for region, names in self.conditional_orders.items():
            hidden = hidden_region(self.domain, region).to(x.device)
            hidden_dims = int(hidden.sum()) * x.shape[1]
            per_order = torch.stack([log_probs[name][:, hidden].sum(1) for name in names])  # (K, B) nats
            for name, nats in zip(names, per_order):
                result[f"nll_hidden_order/{region}/{name}"] = to_bpd(nats, hidden_dims)
            mixture = torch.logsumexp(per_order.double(), 0) - math.log(len(names))
            result[f"nll_hidden/{region}"] = to_bpd(mixture, hidden_dims)
            result[f"nll_hidden_nats/{region}"] = -mixture
        return result

    # ---- sampling and completion ----------------------------------------------------------------------------------
    def _check_sampler_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(SAMPLER_OPTIONS))
        if unknown:
            raise ValueError(f"unknown LMConv sampler options {unknown}; valid: {', '.join(SAMPLER_OPTIONS)}")
        for key in ("mixture_temperature", "logistic_temperature"):
            if options.get(key) is not None and not options[key] > 0:
                raise ValueError(f"sampler.{key} must be > 0, got {options[key]}")

    def _options(self, overrides: dict) -> dict:
        self._check_sampler_options(overrides)
        return {**self.sampler_cfg, **{k: v for k, v in overrides.items() if v is not None}}

    @torch.no_grad()
    def generate(self, x: Tensor, observed: Tensor, orders: Tensor, generator: Optional[torch.Generator] = None,
                 progress: bool = False, mixture_temperature: float = 1.0, logistic_temperature: float = 1.0
                 ) -> tuple[Tensor, Tensor]:
        """Generate the unobserved pixels of dense x (B, C, H, W) one per forward pass, in per-sample `orders`
        (B, N) that put each sample's `observed` (B, N) pixels first. Returns the images and the log-probability
        (B,) nats of the generated pixels under the model (temperature 1) given the observed ones."""
        batch, channels = x.shape[:2]
        same_order = bool((orders == orders[:1]).all())
        masks = self._masks_of_rank(rank_of(orders[0] if same_order else orders))
        x = torch.where(observed.view(batch, 1, *x.shape[2:]), x, torch.zeros_like(x))  # hidden pixels start at 0
        flat = x.view(batch, channels, -1)
        log_prob = torch.zeros(batch, device=x.device, dtype=torch.float64)
        first_step = int(observed.sum(1).min())
        steps = range(first_step, orders.shape[1])
        if progress:
            from tqdm.auto import tqdm  # imported lazily: only progress bars need it
            steps = tqdm(steps, desc="pixels")
        rows = torch.arange(batch, device=x.device)
        for step in steps:
            pixel = orders[:, step]
            todo = ~observed[rows, pixel]
            params = self.net(x, masks).flatten(2)[rows, :, pixel][..., None, None]  # (B, P, 1, 1)
            value = self.likelihood.sample(params, generator, mixture_temperature, logistic_temperature)
            flat[rows, :, pixel] = torch.where(todo[:, None], value[:, :, 0, 0], flat[rows, :, pixel])
            log_prob += torch.where(todo, self.likelihood.log_prob(params, value)[:, 0, 0].double(), 0.0)
        return x, log_prob

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, resolution=None,
               progress: bool = False, **options) -> FieldBatch:
        """`num_samples` images generated pixel by pixel in `order` (any order name, trained or not)."""
        domain = self.sampling_domain(resolution)
        options = self._options(options)
        order = self.order(options["order"] or self.train_orders[0]).to(self.device)
        x = torch.zeros(num_samples, self.signal_dim, *domain.shape, device=self.device)
        observed = torch.zeros(num_samples, domain.num_points, dtype=torch.bool, device=self.device)
        images, _ = self.generate(x, observed, order.expand(num_samples, -1), generator, progress,
                                  options["mixture_temperature"], options["logistic_temperature"])
        return FieldBatch.from_dense(images, domain)

    def completion_orders(self, observed: Tensor, order: Optional[str] = None) -> Tensor:
        """Per-sample orders (B, N) that generate the hidden pixels last: `order` (or, when None, the first
        evaluated order that already puts the sample's hidden pixels last, else the first training order),
        rearranged to put the observed pixels first."""
        if order is not None:
            return observed_first(self.order(order).to(observed.device), observed)
        patterns, which = torch.unique(observed, dim=0, return_inverse=True)
        chosen = []
        for pattern in patterns:  # distinct observed sets (usually one), not pixels
            names = [name for name in self.eval_orders if puts_last(self.order(name), ~pattern.cpu())]
            if not names:
                log.warning("no evaluated order generates this hidden region last; completing with %s rearranged "
                            "to put the observed pixels first (a mask set never trained on)", self.train_orders[0])
            chosen.append(self.order(names[0] if names else self.train_orders[0]).to(observed.device))
        return observed_first(torch.stack(chosen)[which], observed)

    def complete(self, fields: FieldBatch, observed: Tensor, generator: Optional[torch.Generator] = None,
                 progress: bool = False, **options) -> FieldBatch:
        """Fields whose `observed` (B, N) pixels are kept exactly and the rest generated last, seeing them all."""
        options = self._options(options)
        if observed.shape != fields.values.shape[:2]:
            raise ValueError(f"observed must be (B, N) = {tuple(fields.values.shape[:2])}, got {tuple(observed.shape)}")
        empty = (~observed).sum(1) == 0
        if empty.any():
            raise ValueError(f"{int(empty.sum())} fields have no hidden pixel to complete (e.g. field "
                             f"{int(empty.nonzero()[0])}); give a non-empty hidden region ({', '.join(HIDDEN_REGIONS)})")
        values = fields.to_dense()
        check_on_grid(values, self.num_levels)
        orders = self.completion_orders(observed, options["order"])
        images, _ = self.generate(values, observed, orders, generator, progress, options["mixture_temperature"],
                                  options["logistic_temperature"])
        completed = self.domain.from_dense(images)
        completed = torch.where(observed[..., None], fields.values, completed)  # observed pixels bit-exact
        return FieldBatch.from_values(completed, self.domain)

    # ---- optimisation ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = instantiate(self.optimizer_cfg, params=self.parameters())
        gamma, per_step = self.lr_decay["gamma"], self.lr_decay["interval"] == "step"

        def factor(step: int) -> float:  # the paper's decay times the shared warm-up and schedule
            return self.lr_factor(step) * gamma ** (step if per_step else self.current_epoch)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
