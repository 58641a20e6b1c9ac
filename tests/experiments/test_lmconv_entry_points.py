"""LMConv through the entry points as a user runs them on lmconv_tiny: evaluate.py writes the order ensemble, each
order and the conditional NLL of the configured region; sample.py samples in a chosen order and completes a
samples file's hidden half, keeping the observed pixels bit-exact."""
import json
import math
import re

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from conftest import CONF, compose_train
from experiments import sample
from experiments.evaluate import evaluate_checkpoint
from experiments.train import train
from lightning_modules.checkpointing import load_method


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lmconv_tiny")
    train(compose_train(tmp_path, ["experiment=lmconv_tiny", "test=false", "method.novel_orders=[raster_0]"]))
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def compose_entry(config_name, output_dir, overrides):
    """An evaluate/sample config as its command line composes it, ready to pass to the entry point."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"output_dir={output_dir}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    return cfg


def test_evaluate_writes_the_ensemble_each_order_and_the_conditional_nll(checkpoint, tmp_path):
    evaluate_checkpoint(compose_entry("evaluate", tmp_path, [f"ckpt_path={checkpoint}", "metrics=[loss,bpd]",
                                                             "bpd_batches=1", "progress=false"]))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["num_samples"] == 0  # test-split metrics only: no field was drawn
    metrics = record["metrics"]
    order_keys = sorted(key for key in metrics if key.startswith("test/bpd_order/"))
    assert order_keys == ["test/bpd_order/s_curve_0", "test/bpd_order/s_curve_1"]  # the training orders
    orders = [metrics[key] for key in order_keys]
    # per sample, the ensemble of K orders lies within log K nats of its best order
    dims = load_method(checkpoint).domain.num_points
    assert min(orders) - math.log2(2) / dims - 1e-9 <= metrics["test/bpd"] <= max(orders) + 1e-9
    assert math.isfinite(metrics["test/bpd_novel/raster_0"])
    assert metrics["test/nll_hidden/top"] > 0  # the top half, last in s_curve_1 of the evaluated orders
    assert metrics["test/nll_hidden_order/top/s_curve_1"] == pytest.approx(metrics["test/nll_hidden/top"])
    assert not any(key.startswith("test/nll_hidden_order/top/s_curve_0") for key in metrics)


def test_sample_in_an_order_then_complete_the_bottom_half(checkpoint, tmp_path, capsys):
    drawn = tmp_path / "drawn"
    sample.main(compose_entry("sample", drawn, [f"ckpt_path={checkpoint}", "num_samples=3", "order=s_curve_1",
                                                "batch_size=2"]))
    assert "64/64" in capsys.readouterr().err  # the progress bar runs over the 8x8 pixels
    images = np.load(drawn / "samples.npz")["images"]
    assert images.shape == (3, 8, 8, 1) and (drawn / "samples.png").exists()
    assert set(np.unique(images)) <= {round(255 * level / 16) for level in range(17)}  # the 17 digit levels

    completed_dir = tmp_path / "completed"
    sample.main(compose_entry("sample", completed_dir, [f"ckpt_path={checkpoint}", f"complete.images={drawn}/samples.npz",
                                                        "complete.hidden=bottom", "progress=false", "seed=1"]))
    completed = np.load(completed_dir / "samples.npz")["images"]
    assert completed.shape == images.shape and (completed_dir / "samples.png").exists()
    assert np.array_equal(completed[:, :4], images[:, :4])  # the observed top half, bit-exact
    assert not np.array_equal(completed[:, 4:], images[:, 4:])


def test_a_completion_file_of_the_wrong_size_is_refused(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the user's view: one line, exit status 1
    np.savez(tmp_path / "wrong.npz", images=np.zeros((2, 9, 9, 1), np.uint8))
    with pytest.raises(SystemExit) as stop:
        sample.main(compose_entry("sample", tmp_path / "out", [f"ckpt_path={checkpoint}", "progress=false",
                                                              f"complete.images={tmp_path}/wrong.npz"]))
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 1 and re.search(r"holds \[9, 9\] fields; this model completes \[8, 8\]", last_line)
