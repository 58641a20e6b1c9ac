"""LMConv as a method: the conditional NLL is a teacher-forced likelihood, the order ensemble is bounded, sampling
records the model's own log-probability, completion keeps observed pixels, the lr decays, bad input is refused."""
import math

import pytest
import torch

from datamodules.fields import FieldBatch, Grid
from evaluation.likelihood import TOTAL_BPD, with_order_ensemble
from lightning_modules.lmconv import LMConv
from lightning_modules.sampling import hidden_region
from networks.lmconv.likelihoods import check_on_grid, from_levels

NET = {"_target_": "networks.lmconv.pixelcnn.LocallyMaskedPixelCNN", "filters": 8, "num_res_blocks": 1}
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def make(shape=(6, 6), levels=17, likelihood=None, orders=("s_curve",), **kwargs):
    torch.manual_seed(0)
    module = LMConv(net=NET, likelihood=likelihood or {"name": "dmol", "num_mixtures": 3}, orders=list(orders),
                    domain=Grid(shape), signal_dim=1, num_levels=levels, optimizer=OPTIMIZER, **kwargs)
    return module.eval()


def random_images(module, count, seed=0):
    levels = torch.randint(0, module.num_levels, (count, module.domain.num_points, 1),
                           generator=torch.Generator().manual_seed(seed))
    return FieldBatch.from_values(from_levels(levels, module.num_levels), module.domain)


def test_conditional_nll_is_log_p_x_minus_log_p_observed_without_zeroing():
    module = make(conditional_regions=["top"], eval_orders=["s_curve_1"])
    batch = random_images(module, 4)
    result = module.bits_per_dim(batch)
    total_nats = result["nll_nats"]
    hidden = hidden_region(module.domain, "top")
    # log p(observed): the same model on images whose hidden half is anything else (it comes last in the order)
    scrambled = batch.values.clone()
    scrambled[:, hidden] = random_images(module, 4, seed=1).values[:, hidden]
    log_p_observed = module.pixel_log_probs(module.domain.to_dense(scrambled), module.masks("s_curve_1"))[:, ~hidden]
    torch.testing.assert_close(result["nll_hidden_nats/top"], total_nats + log_p_observed.sum(1).double(),
                               rtol=1e-5, atol=1e-4)
    zeroed = batch.values.clone()
    zeroed[:, hidden] = 0
    zeroed_nats = -module.pixel_log_probs(module.domain.to_dense(zeroed), module.masks("s_curve_1"))[:, hidden].sum(1)
    assert not torch.allclose(zeroed_nats.double(), result["nll_hidden_nats/top"]), "the hidden input was zeroed"
    bits = result["nll_hidden/top"] * int(hidden.sum()) * math.log(2)
    torch.testing.assert_close(bits, result["nll_hidden_nats/top"])


def test_the_order_ensemble_is_bounded_by_its_best_order():
    module = make(novel_orders=["raster_0"])
    batch = random_images(module, 5)
    result = module.bits_per_dim(batch)
    dims = module.domain.num_points
    orders = torch.stack([result[f"bpd_order/s_curve_{v}"] for v in range(8)]).double()
    ensemble = with_order_ensemble(result, dims)[TOTAL_BPD]
    to_log_p = lambda bpd: -bpd * dims * math.log(2)  # noqa: E731
    best = to_log_p(orders).max(0).values
    assert (to_log_p(ensemble) <= best + 1e-9).all() and (to_log_p(ensemble) >= best - math.log(8) - 1e-9).all()
    torch.testing.assert_close(result["nll_nats"], -to_log_p(ensemble))
    assert "bpd_novel/raster_0" in result and "bpd_order/raster_0" not in result
    single = make(orders=["s_curve_0"])
    one = single.bits_per_dim(batch)
    torch.testing.assert_close(with_order_ensemble(one, dims)[TOTAL_BPD], one["bpd_order/s_curve_0"].double())


@pytest.mark.parametrize("likelihood,levels", [({"name": "dmol", "num_mixtures": 3}, 17), ({"name": "binary"}, 2)])
def test_the_log_prob_recorded_while_sampling_is_the_one_pass_likelihood(likelihood, levels):
    module = make(levels=levels, likelihood=likelihood)
    generator = torch.Generator().manual_seed(3)
    order = module.order("gilbert_2")
    x = torch.zeros(3, 1, 6, 6)
    observed = torch.zeros(3, 36, dtype=torch.bool)
    images, log_prob = module.generate(x, observed, order.expand(3, -1), generator)
    check_on_grid(images, levels)
    one_pass = module.pixel_log_probs(images, module.masks("gilbert_2")).sum(1)
    torch.testing.assert_close(log_prob, one_pass.double(), rtol=1e-5, atol=1e-4)


def test_completion_keeps_observed_pixels_and_records_the_conditional():
    module = make(conditional_regions=["bottom"])
    batch = random_images(module, 3)
    observed = ~hidden_region(module.domain, "bottom")
    completed = module.complete(batch, observed.expand(3, -1), torch.Generator().manual_seed(0))
    assert torch.equal(completed.values[:, observed], batch.values[:, observed])
    assert not torch.equal(completed.values[:, ~observed], batch.values[:, ~observed])
    check_on_grid(completed.values, 17)
    orders = module.completion_orders(observed.expand(3, -1))
    assert torch.equal(orders[0], module.order("s_curve_0"))  # a trained order that puts the bottom last
    _, log_prob = module.generate(batch.to_dense(), observed.expand(3, -1), orders, torch.Generator().manual_seed(0))
    dense = completed.to_dense()
    one_pass = module.pixel_log_probs(dense, module.masks("s_curve_0"))[:, ~observed].sum(1)
    torch.testing.assert_close(log_prob, one_pass.double(), rtol=1e-5, atol=1e-4)


def test_per_sample_completion_of_different_regions():
    module = make()
    batch = random_images(module, 2)
    observed = torch.stack([~hidden_region(module.domain, "left"), ~hidden_region(module.domain, "center")])
    completed = module.complete(batch, observed, torch.Generator().manual_seed(0))
    assert torch.equal(completed.values[observed], batch.values[observed])
    orders = module.completion_orders(observed)
    assert torch.equal(orders[0], module.order("s_curve_6"))  # left half last
    assert (~observed[1])[orders[1][-int((~observed[1]).sum()):]].all()  # centre last, rearranged


def test_samples_follow_the_chosen_order_and_temperatures():
    module = make()
    a = module.sample(2, torch.Generator().manual_seed(0), order="raster_0").values
    b = module.sample(2, torch.Generator().manual_seed(0), order="s_curve_3", mixture_temperature=0.5,
                      logistic_temperature=0.1).values
    check_on_grid(a, 17), check_on_grid(b, 17)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown LMConv sampler options \\['steps'\\]"):
        module.sample(1, steps=10)
    with pytest.raises(ValueError, match="must be > 0"):
        module.sample(1, logistic_temperature=0)


def test_the_learning_rate_decays_per_step_or_per_epoch():
    module = make(lr_decay={"gamma": 0.9, "interval": "step"})
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    for _ in range(5):
        optimizer.step(), scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.9 ** 5)
    per_epoch = make(lr_decay={"gamma": 0.9, "interval": "epoch"})  # no trainer: epoch 0 throughout
    config = per_epoch.configure_optimizers()
    for _ in range(5):
        config["optimizer"].step(), config["lr_scheduler"]["scheduler"].step()
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-3)


def test_training_draws_one_of_its_orders_per_batch_and_learns(monkeypatch):
    module = make(orders=["s_curve_0", "s_curve_5"]).train()
    seen = []
    original = module.masks
    monkeypatch.setattr(module, "masks", lambda name: seen.append(name) or original(name))
    batch = random_images(module, 8)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = module.compute_losses(batch)["loss"].mean()
        first = loss.item() if first is None else first
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    assert set(seen) == {"s_curve_0", "s_curve_5"}
    assert loss.item() < first - 0.3, (first, loss.item())


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="needs a square image.*variants 0-3"):
        make(shape=(6, 8))
    make(shape=(6, 8), orders=["s_curve_0", "s_curve_3"])
    with pytest.raises(ValueError, match="not on the 17-level grid"):
        make().compute_losses(FieldBatch.from_values(torch.full((1, 36, 1), 0.01), Grid((6, 6))))
    with pytest.raises(ValueError, match="none of the evaluated orders .* generates it last"):
        make(orders=["s_curve_0"], conditional_regions=["top"])
    with pytest.raises(Exception, match="PONO"):  # hydra wraps the network's ValueError
        LMConv(net={**NET, "norm": "batch"}, likelihood={"name": "dmol"}, orders=["s_curve"], domain=Grid((4, 4)),
               signal_dim=1, num_levels=17, optimizer=OPTIMIZER)
    with pytest.raises(ValueError, match="2 levels"):
        make(likelihood={"name": "binary"})
    make(levels=2, likelihood={"name": "binary", "num_mixtures": None})  # a config switching from dmol nulls it
    with pytest.raises(ValueError, match="continuous values"):
        make(levels=None)
    module = make()
    batch = random_images(module, 2)
    with pytest.raises(ValueError, match="no hidden pixel"):
        module.complete(batch, torch.ones(2, 36, dtype=torch.bool))
