"""End-to-end runs as a user starts them: DDP on 2 CPU processes, sample and evaluate (sweeps are in
test_readme_commands.py; resume after SIGKILL is in the method contract, for every method)."""

import json
import math
import os
from pathlib import Path

import pytest

from conftest import run_entry
from lightning_modules.checkpointing import read_checkpoint

pytestmark = pytest.mark.slow


def test_ddp_on_two_cpu_processes(tmp_path, monkeypatch):
    """Each of the 2 ranks trains on half of the global batch of 8, on other fields than the other rank, with its
    own seed (seed + rank) and so its own t and noise draws, while DDP keeps the weights identical."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    probe = tmp_path / "ranks.json"
    run_entry("train.py", "experiment=ddpm_tiny", "trainer=ddp_cpu", "data.batch_size=8", f"paths.log_dir={tmp_path}",
              "trainer.max_steps=4", "run_name=ddp", "seed=7", "+callbacks.rank_probe._target_=rank_probe.RankProbe",
              f"+callbacks.rank_probe.path={probe}")
    run_dir = tmp_path / "train" / "runs" / "ddp"
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4 and checkpoint["fieldgen_config"]["trainer"]["devices"] == 2
    assert (run_dir / "samples" / "latest.png").exists()

    ranks = json.loads(probe.read_text())
    assert [rank["rank"] for rank in ranks] == [0, 1]
    assert [rank["initial_seed"] for rank in ranks] == [7, 8]
    first, second = ranks[0]["steps"], ranks[1]["steps"]
    assert [step["step"] for step in first] == [step["step"] for step in second] == [0, 1, 2, 3]
    for mine, other in zip(first, second):
        assert mine["batch_size"] == other["batch_size"] == 4
        assert len(set(mine["fields"])) == 4 and not set(mine["fields"]) & set(other["fields"])
        assert mine["rng"] != other["rng"]
        assert mine["weights"] == other["weights"]


def test_wandb_logs_offline_without_an_api_key(tmp_path, monkeypatch):
    for variable in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    run_entry("train.py", "experiment=ddpm_tiny", "logger=wandb", f"paths.log_dir={tmp_path}", "run_name=wb",
              "test=false")
    offline_runs = list((tmp_path / "train" / "runs" / "wb" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1


def test_wandb_with_a_key_but_no_server_logs_offline_beside_the_csv_metrics(tmp_path, monkeypatch):
    import socket

    monkeypatch.delenv("WANDB_MODE", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]  # closed on leaving: nothing answers there (never the network)
    proc = run_entry("train.py", "experiment=ddpm_tiny", "logger=wandb", f"paths.log_dir={tmp_path}", "run_name=wb",
                     "test=false", env={"WANDB_API_KEY": "not-a-real-key", "WANDB_BASE_URL": f"http://127.0.0.1:{port}"})
    assert f"the W&B server 127.0.0.1:{port} is unreachable" in proc.stdout + proc.stderr
    run_dir = tmp_path / "train" / "runs" / "wb"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert (run_dir / "csv" / "version_0" / "metrics.csv").is_file()
    media = sorted(p.name.split("_")[0] for p in (offline / "files" / "media" / "images").glob("*.png"))
    assert "loss" in media and "samples" in media


def test_sample_from_a_trained_run_at_any_resolution(tmp_path):
    import numpy as np

    run_entry("train.py", "experiment=dpf_tiny", f"paths.log_dir={tmp_path}", "run_name=dpf", "test=false")
    ckpt = tmp_path / "train" / "runs" / "dpf" / "checkpoints" / "last.ckpt"
    out = tmp_path / "samples16"
    proc = run_entry("sample.py", f"ckpt_path={ckpt}", "num_samples=5", "batch_size=2", f"output_dir={out}",
                     "resolution=16")
    samples = np.load(out / "samples.npz")
    assert samples["images"].shape == (5, 16, 16, 1) and samples["images"].dtype == np.uint8
    assert samples["values"].shape == (5, 256, 1) and samples["coords"].shape == (256, 2)
    assert (out / "samples.png").exists() and "20/20" in proc.stderr  # the progress bar over sampling steps


def test_evaluate_a_checkpoint_a_samples_file_and_compare_runs(tmp_path):
    run_entry("train.py", "experiment=ddpm_tiny", f"paths.log_dir={tmp_path}", "run_name=ev", "test=false")
    ckpt = tmp_path / "train" / "runs" / "ev" / "checkpoints" / "last.ckpt"
    run_entry("evaluate.py", f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'eval'}", "num_samples=40",
              "bpd_batches=1", "metrics=[loss,bpd,fid,kid,is,precision_recall]", "kid_subset_size=20")
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["dataset"] == "digits" and record["method"] == "ddpm"
    metrics = record["metrics"]
    for key in ("test/loss", "test/bpd", "fid[digits-cnn]", "kid[digits-cnn]", "is[digits-cnn]",
                "precision[digits-cnn]", "recall[digits-cnn]"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), (key, metrics[key])
    assert metrics["test/bpd"] > 0 and metrics["fid[digits-cnn]"] >= 0 and metrics["is[digits-cnn]"] >= 1
    assert all(0 <= metrics[f"{name}[digits-cnn]"] <= 1 for name in ("precision", "recall"))
    assert len(record["tables"]["rate_distortion"]) > 1 and (tmp_path / "eval" / "samples.npz").exists()

    run_entry("evaluate.py", f"samples={tmp_path / 'eval' / 'samples.npz'}", "data=digits", "metrics=[fid]",
              f"output_dir={tmp_path / 'scored'}")
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())["metrics"]
    assert scored["fid[digits-cnn]"] == pytest.approx(record["metrics"]["fid[digits-cnn]"], rel=1e-6)

    run_entry("evaluate.py", f"compare=[{tmp_path / 'eval'},{tmp_path / 'scored'}]", f"output_dir={tmp_path / 'cmp'}")
    assert (tmp_path / "cmp" / "comparison.png").exists()
    assert "fid[digits-cnn]" in (tmp_path / "cmp" / "comparison.md").read_text()
