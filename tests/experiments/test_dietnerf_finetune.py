"""DietNeRF's MSE-only fine-tuning phase continues a DietNeRF run: step, learning rate and Adam state; a rerun of
the fine-tuning command continues the fine-tuning run itself."""
import pytest
from omegaconf import OmegaConf

from conftest import compose_train
from experiments.train import resume_path, train
from lightning_modules.build import build
from lightning_modules.checkpointing import read_checkpoint


def test_the_fine_tuning_phase_resumes_step_lr_and_adam_state(tmp_path, fake_data_root, monkeypatch):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))
    first = compose_train(tmp_path / "diet", ["experiment=dietnerf_tiny", "test=false", "trainer.max_steps=4",
                                              "method.lr_decay_steps=10", "trainer.log_every_n_steps=2"])
    train(first)
    # the semantic term (steps 0 and 2) reaches the log, written at steps 1 and 3, with its encoder's name
    (csv,) = (tmp_path / "diet" / "run" / "csv").glob("*/metrics.csv")
    header, *rows = [line.split(",") for line in csv.read_text().splitlines()]
    column = header.index("train/semantic[procnet-untrained]")
    assert sum(bool(row[column]) for row in rows) == 2
    diet = read_checkpoint(tmp_path / "diet" / "run" / "checkpoints" / "last.ckpt")
    finetune = compose_train(tmp_path / "ft", ["experiment=dietnerf_tiny", "test=false", "trainer.max_steps=6",
                                               "method.lr_decay_steps=10", "method.semantic.enabled=false",
                                               f"ckpt_path={tmp_path / 'diet' / 'run' / 'checkpoints' / 'last.ckpt'}"])
    metrics = train(finetune)
    tuned = read_checkpoint(tmp_path / "ft" / "run" / "checkpoints" / "last.ckpt")
    assert diet["global_step"] == 4 and tuned["global_step"] == 6
    adam_steps = {int(state["step"]) for state in tuned["optimizer_states"][0]["state"].values()}
    assert adam_steps == {6}  # Adam's moments continued from the DietNeRF run's 4 steps
    assert tuned["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(
        OmegaConf.select(finetune, "method.optimizer.lr") * 0.1 ** (6 / 10))
    assert not any(key.startswith("train/semantic") for key in metrics)  # MSE only

    # the fine-tuning command rerun (as after a kill) continues its own last.ckpt, not the DietNeRF checkpoint
    rerun = compose_train(tmp_path / "ft", ["experiment=dietnerf_tiny", "test=false", "trainer.max_steps=6",
                                            "method.lr_decay_steps=10", "method.semantic.enabled=false",
                                            f"ckpt_path={tmp_path / 'diet' / 'run' / 'checkpoints' / 'last.ckpt'}"])
    assert resume_path(rerun, build(rerun)[1]) == str(tmp_path / "ft" / "run" / "checkpoints" / "last.ckpt")
