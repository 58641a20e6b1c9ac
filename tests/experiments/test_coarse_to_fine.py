"""dpf_primitives32 continues the 8^3 run of dpf_primitives32_at8 at 32^3: step, weights and Adam state carry over,
the field resolution changes, and the experiment's ckpt_path is where the first phase's command writes."""
from conftest import compose_train
from experiments.train import train
from lightning_modules.checkpointing import read_checkpoint
from lightning_modules.runtime import run_dir_name

TINY = ["test=false", "method.net.num_latents=4", "method.net.latent_dim=16", "method.net.self_attends_per_block=1",
        "method.net.widening_factor=1", "data.field_maker.source.num_train=16", "data.field_maker.source.num_test=4"]


def test_the_32_cubed_phase_continues_the_8_cubed_run(tmp_path):
    coarse = compose_train(tmp_path / "at8", ["experiment=dpf_primitives32_at8", "trainer.max_steps=2",
                                              "data.batch_size=4", *TINY])
    train(coarse)
    coarse_ckpt = tmp_path / "at8" / "run" / "checkpoints" / "last.ckpt"
    fine = compose_train(tmp_path / "at32", ["experiment=dpf_primitives32", "trainer.max_steps=3", "data.batch_size=2",
                                             f"ckpt_path={coarse_ckpt}", *TINY])
    train(fine)
    first = read_checkpoint(coarse_ckpt)
    second = read_checkpoint(tmp_path / "at32" / "run" / "checkpoints" / "last.ckpt")
    assert first["hyper_parameters"]["domain"]["shape"] == [8, 8, 8]
    assert second["hyper_parameters"]["domain"]["shape"] == [32, 32, 32]
    assert first["global_step"] == 2 and second["global_step"] == 3
    assert {int(state["step"]) for state in second["optimizer_states"][0]["state"].values()} == {3}

    default = compose_train(tmp_path / "default", ["experiment=dpf_primitives32"])
    assert default.ckpt_path == (f"{default.paths.log_dir}/train/runs/"
                                 f"{run_dir_name(None, 'experiment=dpf_primitives32_at8')}/checkpoints/last.ckpt")
