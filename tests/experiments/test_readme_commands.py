"""The README's command lines run as a new user types them: from a fresh directory, with no hidden overrides
(no hydra.sweep.dir, no paths); only step counts are cut, with knobs that leave the run directory's name alone."""
import os
import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT, run_entry
from fake_slurm import install_fake_slurm

pytestmark = pytest.mark.slow
CHEAP = ["trainer.max_steps=2", "test=false"]  # both in hydra.job.config.override_dirname.exclude_keys


def readme_commands(prefix: str) -> list[list[str]]:
    """The arguments of every README command line starting with `prefix` (continuations joined, comments cut)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(prefix):
                commands.append(shlex.split(line)[2:])
    return commands


def sweep_command(launcher: str) -> list[str]:
    (command,) = [args for args in readme_commands("python experiments/train.py -m") if
                  f"hydra/launcher={launcher}" in args]
    return command


def job_dirs(cwd: Path) -> list[Path]:
    (sweep,) = (cwd / "logs" / "train" / "multiruns").iterdir()
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_readme_sweep_runs_as_written_and_a_rerun_resumes_every_job(tmp_path, launcher):
    command = sweep_command("submitit_local")
    if launcher == "basic":
        command = [arg for arg in command if not arg.startswith("hydra/launcher=")]
    run_entry("train.py", *command, *CHEAP, cwd=tmp_path, timeout=900)
    jobs = job_dirs(tmp_path)
    assert [p.name for p in jobs] == [f"experiment-ddpm_digits__seed-{seed}" for seed in (1, 2, 3)]
    assert jobs[0].parent.name == "experiment-ddpm_digits__seed-1+2+3"  # named by the command, not the time
    assert all((job / "checkpoints" / "last.ckpt").is_file() for job in jobs)
    if launcher == "basic":
        return
    # the submitit job gets a pickled copy of the config: the rerun must still find the same directories
    run_entry("train.py", *command, "trainer.max_steps=3", "test=false", cwd=tmp_path, timeout=900)
    assert job_dirs(tmp_path) == jobs
    for job in jobs:
        assert "(global step 2)" in (job / "train.log").read_text(), job


def test_readme_slurm_sweep_runs_on_slurm(tmp_path):
    """The slurm_a100 launcher end to end on a fake SLURM that runs each array task here (a tiny experiment on the
    CPU in place of the README's CIFAR-10 on GPUs); the job lands in the stable sweep directory."""
    bin_dir, submitted = install_fake_slurm(tmp_path / "slurm", run_jobs=True)
    cwd = tmp_path / "work"
    cwd.mkdir()
    run_entry("train.py", "-m", "hydra/launcher=slurm_a100", "experiment=ddpm_tiny", "seed=1,2", "test=false",
              cwd=cwd, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=900)
    assert [p.name for p in job_dirs(cwd)] == ["experiment-ddpm_tiny__seed-1", "experiment-ddpm_tiny__seed-2"]
    assert all((job / "checkpoints" / "last.ckpt").is_file() for job in job_dirs(cwd))
    (script,) = submitted.iterdir()
    assert "#SBATCH --array=0-1" in script.read_text() and "#SBATCH --constraint=a100" in script.read_text()


@pytest.mark.parametrize("launcher, expected", [
    ("slurm_a100", ["--array=0-3", "--gpus-per-node=1", "--ntasks-per-node=1", "--constraint=a100"]),
    ("slurm_a100_ddp", ["--gpus-per-node=8", "--ntasks-per-node=8", "--nodes=1",
                        "--partition=gpu", "--time=2880"]),
])
def test_readme_slurm_sweeps_submit_as_written(tmp_path, launcher, expected):
    """The README's SLURM commands, exactly, submit the array job they describe (the fake SLURM records the
    script and reports the jobs failed, as there are no GPUs here)."""
    bin_dir, submitted = install_fake_slurm(tmp_path / "slurm", run_jobs=False)
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = run_entry("train.py", *sweep_command(launcher), cwd=cwd, check=False,
                     env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=600)
    (script,) = submitted.iterdir()
    lines = script.read_text()
    for option in expected:
        assert f"#SBATCH {option}" in lines, (option, lines)
    (sweep,) = (cwd / "logs" / "train" / "multiruns").iterdir()
    assert f"{sweep}/.submitit/" in lines and "HydraConfig was not set" not in proc.stderr
