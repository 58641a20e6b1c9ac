"""End-to-end runs as a user starts them: resume after SIGKILL, DDP on 2 CPU processes, multirun sweeps."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_entry
from lightning_modules.checkpointing import read_checkpoint

pytestmark = pytest.mark.slow


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    args = ["experiment=ddpm_tiny", f"paths.log_dir={tmp_path}", "run_name=killed", "trainer.limit_train_batches=50",
            "callbacks.model_checkpoint.every_n_train_steps=5", "trainer.check_val_every_n_epoch=100"]
    last = tmp_path / "train" / "runs" / "killed" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "train.py"), *args, "trainer.max_steps=100000"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not last.exists() or read_checkpoint(last)["global_step"] < 10):
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = read_checkpoint(last)["global_step"]
    assert step_at_kill >= 10

    resumed = run_entry("train.py", *args, f"trainer.max_steps={step_at_kill + 7}", "test=false")
    assert f"(global step {step_at_kill})" in resumed.stdout + resumed.stderr
    assert read_checkpoint(last)["global_step"] == step_at_kill + 7
    # the killed run's metrics are kept: the resumed run logs to the next CSV version
    assert (last.parents[1] / "csv" / "version_0" / "metrics.csv").exists()


def test_ddp_on_two_cpu_processes(tmp_path):
    run_entry("train.py", "experiment=ddpm_tiny", "trainer=ddp_cpu", "data.batch_size=8", f"paths.log_dir={tmp_path}",
              "trainer.max_steps=4", "run_name=ddp")
    run_dir = tmp_path / "train" / "runs" / "ddp"
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4
    assert (run_dir / "samples" / "latest.png").exists()
    # each of the 2 processes loaded half of the global batch of 8
    assert checkpoint["fieldgen_config"]["trainer"]["devices"] == 2


def test_multirun_sweep_with_the_submitit_local_launcher(tmp_path):
    run_entry("train.py", "-m", "hydra/launcher=submitit_local", "experiment=ddpm_tiny", "seed=1,2",
              f"paths.log_dir={tmp_path}", "hydra.sweep.dir=" + str(tmp_path / "sweep"), "test=false", timeout=900)
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if (p / "checkpoints" / "last.ckpt").exists())
    assert runs == ["experiment-ddpm_tiny__seed-1", "experiment-ddpm_tiny__seed-2"]


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
