"""experiments/benchmark.py on every registered method's tiny experiment (fp32, one repeat, in-process), the
sampling call counting, sweeps, synthetic stand-ins for absent data, peers and the report files."""
import gc
import importlib.util
import json
import math
import mmap
import time

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from torch import nn

from benchmarks import measure
from benchmarks.measure import sampling_step_calls
from benchmarks.operators import SparseConv
from benchmarks.peers import PEERS
from benchmarks.suite import loglog_slope
from benchmarks.synthetic import SyntheticSource, synthetic_source_config
from conftest import CONF
from experiments.benchmark import main
from lightning_modules import METHODS
from lightning_modules.build import build

QUICK = ["benchmark.precisions=[fp32]", "benchmark.warmup=0", "benchmark.repeats=1", "benchmark.batches=1",
         "benchmark.isolate_memory=false", "benchmark.device=cpu", "benchmark.matmul_peak_size=64"]


def compose_benchmark(tmp_path, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("benchmark", overrides=[*overrides, f"benchmark.output_dir={tmp_path}"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def benchmark(tmp_path, fake_data_root, monkeypatch):
    """Run the benchmark in-process on tiny fakes of every dataset; returns (markdown path, record)."""
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))

    def run(*overrides):
        markdown = main(compose_benchmark(tmp_path, [*QUICK, *overrides]))
        return markdown, json.loads((tmp_path / "benchmark.json").read_text())
    return run


def check_rows(rows):
    for row in rows:
        assert row["params"] > 0 and row["sample_calls"] >= 1
        for phase in ("train", "sample"):
            assert math.isfinite(row[f"{phase}_ms"]) and row[f"{phase}_ms"] > 0
            assert math.isfinite(row[f"{phase}_items_per_s"]) and row[f"{phase}_items_per_s"] > 0
            assert math.isfinite(row[f"{phase}_peak_mib"]) and row[f"{phase}_peak_mib"] >= 0  # in-process: >= 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_benchmarked_by_naming_its_experiment(benchmark, capsys, name):
    markdown, record = benchmark(f"experiment={name}_tiny", "benchmark.peers=false")
    assert record["method"] == name and record["experiment"] == f"{name}_tiny"
    assert [row["precision"] for row in record["rows"]] == ["fp32"] and record["rows"][0]["model"].startswith(
        "fieldgen ")
    check_rows(record["rows"])
    text = markdown.read_text()
    assert text in capsys.readouterr().out
    assert "`python experiments/benchmark.py " in text and f" experiment={name}_tiny " in text and "torch" in text
    assert not (markdown.parent / "benchmark.png").exists()  # no sweep, nothing to fit


def test_nerf_reports_rays_per_second_and_its_mlp_share_of_the_matmul_peak(benchmark):
    markdown, record = benchmark("experiment=nerf_tiny", "benchmark.peers=false")
    (row,) = record["rows"]
    rays_per_step = 64  # nerf_tiny: method.rays_per_step from one view; sampling renders whole views
    assert row["train_rays_per_s"] == pytest.approx(rays_per_step / (row["train_ms"] / 1e3))
    rendered = record["sample_batch_size"] * row["points"]
    assert row["sample_rays_per_s"] == pytest.approx(rendered / (row["sample_ms"] / 1e3))
    assert row["train_peak_share"] == pytest.approx(row["train_linear_gflops"] / record["matmul_peak_gflops"]["fp32"])
    assert "train rays/s" in markdown.read_text() and "matmul peak" in markdown.read_text()


def test_linear_flops_count_two_in_out_per_point():
    network = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    assert measure.linear_flops([network], lambda: network(torch.zeros(4, 7, 3))) == 2 * 28 * (3 * 5 + 5 * 2)


def make_module(tmp_path, fake_data_root, monkeypatch, *overrides):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))
    return build(compose_benchmark(tmp_path, list(overrides)))[1]


def count_calls(module, **options) -> int:
    """Calls of every network over a whole `sample` run, counted independently of the benchmark's hooks."""
    counted = []
    for network in module.networks().values():
        forward = network.forward
        network.forward = lambda *args, forward=forward, **kwargs: counted.append(1) or forward(*args, **kwargs)
    module.sample(3, **options)
    for network in module.networks().values():
        del network.forward
    return len(counted)


@pytest.mark.parametrize("experiment, chunk, calls", [("ddpm_tiny", None, 1), ("dpf_tiny", None, 1),
                                                      ("dpf_tiny", 24, 3), ("dpf_tiny", 32, 2)])
def test_a_sampling_step_is_the_calls_of_one_respaced_step(tmp_path, fake_data_root, monkeypatch, experiment,
                                                           chunk, calls):
    overrides = [f"experiment={experiment}"] + ([f"method.query_chunk_size={chunk}"] if chunk else [])
    module = make_module(tmp_path, fake_data_root, monkeypatch, *overrides).eval()
    step = sampling_step_calls(module, 3, steps=2)
    assert len(step) == calls == count_calls(module, steps=5) / 5  # the 64 digit pixels in chunks
    network, args, kwargs = step[0]
    assert network is module.net and args[0].shape[0] == 3
    torch.testing.assert_close(network(*args, **kwargs).shape, module.net(*args, **kwargs).shape)


class Autoregressive:
    """A stand-in for a method without diffusion steps: each step calls `first` then `second`."""

    def __init__(self):
        self.first, self.second, self.device = nn.Linear(2, 2), nn.Linear(2, 2), torch.device("cpu")

    def networks(self):
        return {"first": self.first, "second": self.second}

    def sample(self, num_samples, generator=None):
        x = torch.zeros(num_samples, 2)
        for _ in range(10):
            x = self.second(self.first(x))
        return x


def test_a_method_without_steps_has_one_step_until_a_network_repeats():
    module = Autoregressive()
    assert [network for network, _, _ in sampling_step_calls(module, 4, steps=2)] == [module.first, module.second]


def test_a_sweep_sets_any_key_and_fits_slopes(benchmark):
    markdown, record = benchmark("experiment=dpf_tiny", "benchmark.peers=false",
                                 "benchmark.sweep.key=method.point_sampler.num_query", "benchmark.sweep.values=[8,32]")
    assert [row["method.point_sampler.num_query"] for row in record["rows"]] == [8, 32]
    check_rows(record["rows"])
    assert record["slopes_against"] == "method.point_sampler.num_query"
    assert all(math.isfinite(value) for value in record["slopes"][0].values() if isinstance(value, float))
    assert (markdown.parent / "benchmark.png").stat().st_size > 0
    assert "Fitted slope" in markdown.read_text()


def test_a_sweep_of_keys_set_together_fits_against_points(benchmark):
    _, record = benchmark("experiment=ddpm_tiny", "benchmark.peers=false",
                          "benchmark.sweep.key=[data.field_maker.resolution,+method.net.dropout]",
                          "benchmark.sweep.values=[[4,0.0],[8,0.1]]")
    assert [row["points"] for row in record["rows"]] == [16, 64]
    assert record["slopes_against"] == "points"


@pytest.mark.parametrize("overrides, message", [
    (["benchmark.sweep.key=method.net.no_such_key", "benchmark.sweep.values=[1]"], "write \\+method.net.no_such_key"),
    (["benchmark.sweep.key=[data.batch_size,seed]", "benchmark.sweep.values=[1]"], "one value per key"),
    (["benchmark.sweep.key=data.batch_size"], "needs benchmark.sweep.values"),
    (["benchmark.precisions=[fp16]"], "precisions must be"),
    (["benchmark.repeats=0"], "repeats >= 1"),
    (["benchmark.sample_steps=0"], "sample_steps >= 1"),
    (["benchmark.phases=[render]"], "phases must be"),
])
def test_bad_options_are_named(benchmark, overrides, message):
    with pytest.raises(ValueError, match=message):
        benchmark("experiment=ddpm_tiny", *overrides)


@pytest.mark.parametrize("name, peer", [("ddpm", "diffusers UNet2DModel"), ("dpf", "transformers Perceiver")])
def test_peers_are_timed_in_the_module_on_the_same_batches(benchmark, name, peer):
    _, record = benchmark(f"experiment={name}_tiny")
    assert [row["model"] for row in record["rows"]][1:] == [peer]
    assert record["versions"][PEERS[peer].package]
    check_rows(record["rows"])
    ours, theirs = record["rows"]
    assert theirs["sample_calls"] == ours["sample_calls"]
    if name == "ddpm":  # UNet2DModel mirrors the U-Net layer for layer
        assert theirs["params"] == ours["params"]


def test_absent_data_is_timed_on_synthetic_items_of_its_shape(benchmark, tmp_path):
    _, record = benchmark("experiment=dpf_tiny", "data=cifar10", f"paths.data_dir={tmp_path / 'empty'}",
                          "data.num_workers=0", "benchmark.peers=false")
    assert record["synthetic_data"] and record["rows"][0]["points"] == 32 * 32
    check_rows(record["rows"])


def test_a_synthetic_source_has_the_declared_shape_and_levels():
    folder = synthetic_source_config({"_target_": "datamodules.sources.image_folder.ImageFolder", "root": "/none",
                                      "resolution": 16}, count=5, item_shape=None, reason="absent")
    assert (folder["item_shape"], folder["channels"], folder["num_levels"]) == ([16, 16, 3], 3, 256)
    splits = SyntheticSource(**{k: v for k, v in folder.items() if k != "_target_"}).splits()
    assert splits["train"].shape == (5, 16, 16, 3) and splits["train"].dtype == np.uint8
    voxels = {"_target_": "datamodules.sources.voxels.VoxelFolder", "root": "/none"}
    with pytest.raises(ValueError, match="benchmark.synthetic_item_shape"):
        synthetic_source_config(voxels, count=2, item_shape=None, reason="absent")
    occupancy = synthetic_source_config(voxels, count=2, item_shape=[4, 4, 4], reason="absent")
    assert SyntheticSource(**{k: v for k, v in occupancy.items() if k != "_target_"}).splits()["train"].dtype == bool


def test_loglog_slope_recovers_the_exponent_of_a_power_law():
    x = np.array([256, 1024, 4096, 16384])
    assert loglog_slope(x, 3.0 * x**1.5) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="two distinct"):
        loglog_slope([256, 256], [1.0, 2.0])


@pytest.fixture
def no_garbage_collection():
    """Earlier tests' garbage collected first and none freed mid-test (an xdist worker's collection freed more than
    the step allocated, and the rise read 0)."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def resident_mapping(size: int) -> mmap.mmap:
    """`size` bytes of fresh anonymous memory, written so it is resident (outside malloc, whose freed heap pages
    may stay resident and be reused: an allocation after a free need not raise the resident set)."""
    mapping = mmap.mmap(-1, size)
    np.frombuffer(mapping, dtype=np.uint8)[:] = 1
    return mapping


@pytest.mark.parametrize("restart", ["vmhwm", "refused"])
def test_rss_rise_counts_a_step_that_stays_under_an_earlier_peak(restart, tmp_path, monkeypatch,
                                                                  no_garbage_collection):
    # a spawn child starts with its parent's ru_maxrss as a floor: a rise of that mark would read 0 here
    if restart == "refused":  # containers that refuse the VmHWM restart: VmRSS is sampled instead
        monkeypatch.setattr(measure, "CLEAR_REFS", tmp_path / "no such dir" / "clear_refs")
    resident_mapping(256 * 2**20).close()  # unmapped: the resident set falls back under its peak
    rise = measure.start_rss_rise()
    step = resident_mapping(64 * 2**20)
    assert 60 * 2**20 <= rise() <= 160 * 2**20
    step.close()


def test_sampled_rss_rise_catches_a_peak_freed_before_it_is_read(no_garbage_collection):
    rise = measure.sampled_rss_rise(measure.proc_status_bytes("VmRSS"), poll_s=1e-3)
    step = resident_mapping(96 * 2**20)
    time.sleep(0.05)  # several polls while the step's memory is resident
    step.close()
    assert rise() >= 90 * 2**20


@pytest.mark.slow
def test_isolated_cases_measure_their_own_peak_memory(benchmark):
    # 2048 samples: sampling activations of ~8 MiB each, past what building the module peaked at
    _, record = benchmark("experiment=ddpm_tiny", "benchmark.peers=false", "benchmark.isolate_memory=true",
                          "benchmark.sample_batch_size=2048")
    assert record["memory"] == "RSS rise"
    assert all(row[f"{phase}_peak_mib"] > 0 for row in record["rows"] for phase in ("train", "sample"))


def test_an_operator_case_times_each_variant_forward_and_backward(benchmark):
    markdown, record = benchmark("operator=sparse_depthwise_conv", "operator.channels=4",
                                 "benchmark.sweep.key=operator.grid_size", "benchmark.sweep.values=[8,16]")
    assert [(row["model"], row["points"]) for row in record["rows"]] == [
        (variant, points) for variant in ("dense_scatter", "kernel_map", "dense_masked") for points in (16, 64)]
    for row in record["rows"]:
        assert math.isfinite(row["train_ms"]) and row["train_ms"] > 0 and row["train_peak_mib"] >= 0
        assert row["params"] == 4 * 7 * 7
    assert record["slopes_against"] == "points" and "forward + backward (ms)" in markdown.read_text()


def test_the_regular_conv_case_times_spconv_beside_the_pytorch_backends(benchmark):
    pytest.importorskip("spconv")
    _, record = benchmark("operator=sparse_regular_conv", "operator.channels=4", "operator.grid_size=8")
    assert [row["model"] for row in record["rows"]] == ["dense_scatter", "kernel_map", "spconv", "dense_masked"]
    assert all(row["params"] == 4 * 4 * 7 * 7 and row["train_ms"] > 0 for row in record["rows"])


@pytest.mark.parametrize("depthwise", [True, False])
def test_the_dense_masked_reference_is_the_normalised_sparse_convolution_with_its_gradients(depthwise):
    variants = ["dense_scatter", "kernel_map", "dense_masked"]
    if not depthwise and importlib.util.find_spec("spconv") is not None:
        variants.append("spconv")
    builder = SparseConv(variants, grid_size=9, occupancy=0.3, channels=3, kernel_size=5, batch_size=2,
                         depthwise=depthwise)
    outputs = {}
    for variant in builder.variants:
        run = builder.build(variant, torch.device("cpu"))
        out = run.forward()
        if out.dim() == 4:  # the dense grid, read at the points
            out = out.flatten(2).transpose(1, 2).gather(1, builder.index.unsqueeze(-1).expand(-1, -1, 3))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs[variant] = (out.detach(), run.leaves[-1].grad)
    dense, dense_grad = outputs.pop("dense_masked")
    for out, grad in outputs.values():
        torch.testing.assert_close(out, dense)
        torch.testing.assert_close(grad, dense_grad)


def test_a_diffusion_autoencoder_decodes_its_encoders_latents_of_training_fields(benchmark):
    _, record = benchmark("experiment=infty_diff_tiny", "method.net.latent_dim=4", "benchmark.peers=false")
    check_rows(record["rows"])


def test_only_the_selected_phases_are_measured(benchmark):
    markdown, record = benchmark("experiment=ddpm_tiny", "benchmark.peers=false", "benchmark.phases=[train]")
    (row,) = record["rows"]
    assert row["train_ms"] > 0 and not any(key.startswith("sample_") for key in row)
    assert "train step (ms)" in markdown.read_text() and "sample step" not in markdown.read_text()
