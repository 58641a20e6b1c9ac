"""Bad command-line values end in one line naming the fix, before any work (nothing loaded, sampled or trained);
the traceback goes to the run's log file."""
from pathlib import Path

import pytest
import torch

import experiments.evaluate
import experiments.sample
from conftest import compose_command, run_entry
from experiments.train import train
from lightning_modules.runtime import UsageError, resolve_device

NO_CHECKPOINT = "ckpt_path=/nonexistent/last.ckpt"  # read only after the checks: its error would mean they passed


def run_main(entry, overrides: list[str], capsys, monkeypatch) -> list[str]:
    """The stderr lines of an entry point's Hydra task run on `overrides`, which must exit with status 1."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = compose_command(entry.__name__.split(".")[-1], overrides)
    with pytest.raises(SystemExit) as stop:
        entry.main(cfg)
    assert stop.value.code == 1
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("overrides, message", [
    (["num_samples=0"], "num_samples=0: must be a whole number >= 1"),
    (["num_samples=-3"], "num_samples=-3: must be a whole number >= 1"),
    (["num_samples=abc"], "num_samples=abc: must be a whole number >= 1"),
    (["num_samples=2.5"], "num_samples=2.5: must be a whole number >= 1"),
    (["batch_size=0"], "batch_size=0: must be a whole number >= 1"),
    (["device=gpu"], "device=gpu: not a device; use auto, cpu, cuda or cuda:N"),
])
def test_sample_refuses_bad_numbers_in_one_line(overrides, message, tmp_path, capsys, monkeypatch):
    lines = run_main(experiments.sample, [NO_CHECKPOINT, f"output_dir={tmp_path}", *overrides], capsys, monkeypatch)
    assert lines[-1] == f"Error: {message}" and "Traceback" not in "\n".join(lines)


def test_a_missing_gpu_is_refused_naming_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"device=cuda, but torch finds no CUDA GPU on this machine; use device=cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_sample_without_arguments_names_what_is_missing(tmp_path, capsys, monkeypatch):
    cfg = compose_command("sample", [f"paths.log_dir={tmp_path}"])
    assert cfg.hydra.run.dir == f"{tmp_path}/commands_without_output_dir"  # Hydra can start: the log goes there
    lines = run_main(experiments.sample, [], capsys, monkeypatch)
    assert lines[-1] == ("Error: missing ckpt_path=... output_dir=...; usage: python experiments/sample.py "
                         "ckpt_path=<run dir>/checkpoints/last.ckpt num_samples=64 output_dir=DIR")


@pytest.mark.parametrize("overrides, message", [
    (["compare=/runs/a"], "compare=/runs/a is one path; give the evaluated run dirs as a list: "
                          "compare='[/runs/a,OTHER_RUN_DIR]'"),
    ([], "nothing to evaluate: give ckpt_path=..., samples=... data=..., compare=[...] or renders=[...]"),
    ([NO_CHECKPOINT, "num_samples=0"], "num_samples=0: must be a whole number >= 1"),
    ([NO_CHECKPOINT, "batch_size=abc"], "batch_size=abc: must be a whole number >= 1"),
])
def test_evaluate_refuses_bad_values_in_one_line(overrides, message, tmp_path, capsys, monkeypatch):
    lines = run_main(experiments.evaluate, [f"output_dir={tmp_path}", *overrides], capsys, monkeypatch)
    assert lines[-1].startswith(f"Error: {message}")


def test_a_metric_of_another_domain_is_refused_before_the_samples_are_read(tmp_path, fake_data_root, capsys,
                                                                           monkeypatch):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))
    lines = run_main(experiments.evaluate, ["samples=/nonexistent/samples.npz", "data=digits",
                                            "metrics=[coverage_mmd]", f"output_dir={tmp_path}"], capsys, monkeypatch)
    assert lines[-1] == ("Error: coverage_mmd scores grid 3-D (voxels) fields, not grid2d; metrics that apply here: "
                         "fid, kid, is, precision_recall, confidence")


@pytest.mark.parametrize("override, message", [
    ("trainer.max_steps=abc", r"trainer.max_steps=abc: must be a whole number >= -1 \(-1: no limit\)"),
    ("trainer.max_epochs=-2", r"trainer.max_epochs=-2: must be a whole number >= -1"),
    ("data.batch_size=0", r"data.batch_size=0: must be a whole number >= 1"),
])
def test_train_refuses_bad_numbers_before_building(make_cfg, override, message):
    cfg = make_cfg("experiment=ddpm_tiny", override)
    with pytest.raises(UsageError, match=message):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


@pytest.mark.slow
def test_the_error_is_the_last_line_on_the_terminal_and_the_traceback_is_in_the_log(tmp_path):
    proc = run_entry("sample.py", check=False, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    log_file = tmp_path / "logs" / "commands_without_output_dir" / "sample.log"
    assert proc.stderr.strip().splitlines()[-2:] == [
        f"(full traceback in {log_file})",
        "Error: missing ckpt_path=... output_dir=...; usage: python experiments/sample.py "
        "ckpt_path=<run dir>/checkpoints/last.ckpt num_samples=64 output_dir=DIR"]
    assert "Traceback" in log_file.read_text() and "UsageError" in log_file.read_text()
