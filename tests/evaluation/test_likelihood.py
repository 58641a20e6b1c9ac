"""Bits/dim aggregation, the rate-distortion table and order ensembles on hand-made inputs."""
import math

import pytest
import torch

from evaluation.likelihood import (LikelihoodModel, aggregate_bpd, ensemble_bpd, rate_distortion_table,
                                   with_order_ensemble)


def _diffusion_results(num_steps=10):
    """Two batches of calc_bpd_loop-shaped results; per-sample values average to vb[i] = i + 1, prior 0.5 and
    xstart_mse[i] = ((i + 1) / 127.5)^2 (so the distortion at paper time t is t levels)."""
    vb = torch.arange(1, num_steps + 1, dtype=torch.float64)
    mse = (torch.arange(1, num_steps + 1, dtype=torch.float64) / 127.5) ** 2
    offsets = torch.tensor([[-0.5], [0.5]], dtype=torch.float64)  # two samples around the target means
    batch = {"vb": vb + offsets, "xstart_mse": mse * (1 + offsets), "prior_bpd": torch.tensor([0.4, 0.6]),
             "mse": torch.zeros(2, num_steps)}
    batch["total_bpd"] = batch["vb"].sum(1) + batch["prior_bpd"]
    return [batch, batch]


def test_aggregate_bpd_splits_rate_and_distortion():
    summary = aggregate_bpd(_diffusion_results())
    assert summary["num_samples"] == 4
    assert summary["bpd"] == pytest.approx(55.5)
    totals = torch.tensor([50.4, 60.6, 50.4, 60.6], dtype=torch.float64)
    assert summary["bpd_sem"] == pytest.approx(totals.std().item() / 2)
    assert summary["distortion_bpd"] == pytest.approx(1.0)
    assert summary["rate_bpd"] == pytest.approx(54.5)
    assert summary["prior_bpd"] == pytest.approx(0.5)


def test_rate_distortion_table_hand_computed():
    rows = rate_distortion_table(_diffusion_results(), num_rows=5)
    assert [r["reverse_time"] for r in rows] == [10, 8, 6, 4, 2]
    # paper t = 1, 3, 5, 7, 9: rate = 0.5 + sum_{i=t}^{9} (i + 1); distortion = t
    for row, t in zip(rows, [1, 3, 5, 7, 9]):
        assert row["rate_bpd"] == pytest.approx(0.5 + sum(i + 1 for i in range(t, 10)))
        assert row["distortion_rmse"] == pytest.approx(t, rel=1e-9)


def test_missing_terms_raise_clear_errors():
    with pytest.raises(KeyError, match="total_bpd"):
        aggregate_bpd([{"vb": torch.zeros(2, 3)}])
    with pytest.raises(KeyError, match="xstart_mse"):
        rate_distortion_table([{"total_bpd": torch.zeros(2)}])
    with pytest.raises(ValueError, match="loader was empty"):
        aggregate_bpd([])


def test_ensemble_bpd_averages_probabilities():
    same = torch.tensor([[2.0, 3.0], [2.0, 3.0]])
    torch.testing.assert_close(ensemble_bpd(same, num_dims=784), same[0].double())
    # one dim, bpd 1 and 3: p = 1/2 and 1/8, mixture 5/16
    assert ensemble_bpd(torch.tensor([[1.0], [3.0]]), num_dims=1).item() == pytest.approx(-math.log2(5 / 16))


def test_a_likelihood_model_is_one_by_declaration_not_by_a_method_name():
    class Declared(LikelihoodModel):
        def bits_per_dim(self, batch):
            return {"total_bpd": torch.zeros(1)}

    class LookAlike:
        def bits_per_dim(self, batch):
            return {"total_bpd": torch.zeros(1)}

    assert isinstance(Declared(), LikelihoodModel) and not isinstance(LookAlike(), LikelihoodModel)
    with pytest.raises(TypeError, match="abstract"):
        type("Incomplete", (LikelihoodModel,), {})()


def test_orders_become_their_ensemble_and_are_reported_each():
    # one dim: order a gives bpd 1 (p = 1/2), order b bpd 3 (p = 1/8): the ensemble is -log2(5/16)
    result = {"bpd_order/a": torch.tensor([1.0, 2.0]), "bpd_order/b": torch.tensor([3.0, 2.0]),
              "nll_hidden/top": torch.tensor([0.5, 1.5])}
    merged = with_order_ensemble(result, num_dims=1)
    assert merged["total_bpd"][0].item() == pytest.approx(-math.log2(5 / 16))
    assert merged["total_bpd"][1].item() == pytest.approx(2.0)
    summary = aggregate_bpd([merged])
    assert summary["bpd"] == pytest.approx((-math.log2(5 / 16) + 2.0) / 2)
    assert summary["bpd_order/a"] == pytest.approx(1.5) and summary["bpd_order/b"] == pytest.approx(2.5)
    assert summary["nll_hidden/top"] == pytest.approx(1.0)
    # max_k log p_k - log K <= log p_ensemble <= max_k log p_k: best <= ensemble <= best + log2(K) / D bits/dim
    best = torch.minimum(result["bpd_order/a"], result["bpd_order/b"]).double()
    assert torch.all(merged["total_bpd"] >= best - 1e-12) and torch.all(merged["total_bpd"] <= best + 1.0 + 1e-12)
    with pytest.raises(KeyError, match="their ensemble"):
        with_order_ensemble({**result, "total_bpd": torch.zeros(2)}, num_dims=1)


def test_tables_from_a_real_calc_bpd_loop():
    from lightning_modules.diffusion import GaussianDiffusion

    diffusion = GaussianDiffusion(schedule="linear", num_timesteps=20, num_levels=256)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, (3, 1, 4, 4), generator=generator).float() / 127.5 - 1
    results = diffusion.calc_bpd_loop(lambda x_t, t: torch.zeros_like(x_t), x0, generator=generator)
    summary, rows = aggregate_bpd([results]), rate_distortion_table([results], num_rows=4)
    assert summary["bpd"] == pytest.approx(results["total_bpd"].mean().item())
    assert summary["rate_bpd"] + summary["distortion_bpd"] == pytest.approx(summary["bpd"])
    assert rows[0]["reverse_time"] == 20 and rows[0]["rate_bpd"] == pytest.approx(summary["rate_bpd"])
    rates = [r["rate_bpd"] for r in rows]
    assert rates == sorted(rates, reverse=True)  # fewer reverse steps decoded: fewer bits (KL terms are >= 0)
