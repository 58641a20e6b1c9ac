"""∞-Diff's diffusion autoencoder end to end on tiny versions of the paper's two-stage configs: stage 1 trains the
encoder with the decoder, stage 2 the latent DDPM on the frozen stage-1 EMA weights; the stage-2 checkpoint alone
samples at any resolution."""
import torch

from experiments.train import train
from lightning_modules.checkpointing import load_method, read_checkpoint

TINY_NET = ["channels=8", "num_blocks=1", "time_channels=16", "grid_size=8", "grid_channels=8", "grid.base_channels=8",
            "grid.channel_mults=[1]", "grid.num_res_blocks=1", "grid.attention_resolutions=[]", "grid.num_groups=4",
            "latent_dim=4"]
TINY_RUN = ["data=digits16", "trainer=cpu", "data.batch_size=8", "data.num_workers=0", "trainer.max_steps=3",
            "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "~callbacks.sample_grid", "callbacks.ema.update_every_n_steps=1"]


def test_stage_two_trains_on_the_stage_one_encoder_and_its_checkpoint_samples_at_any_resolution(make_cfg, tmp_path):
    stage1 = make_cfg("experiment=infty_diff_ffhq256", *TINY_RUN, "method.diffusion.num_timesteps=20",
                      *(f"method.net.{o}" for o in TINY_NET), "paths.output_dir=" + str(tmp_path / "stage1"))
    stage1.paths.output_dir = str(tmp_path / "stage1")
    train(stage1)
    autoencoder_ckpt = tmp_path / "stage1" / "checkpoints" / "last.ckpt"
    stage2 = make_cfg("experiment=infty_diff_ffhq256_latent", *TINY_RUN, "method.autoencoder.diffusion.num_timesteps=20",
                      *(f"method.autoencoder.net.{o}" for o in TINY_NET), f"method.autoencoder_ckpt={autoencoder_ckpt}",
                      "method.net.hidden=16", "method.net.num_layers=3", "method.net.time_channels=8",
                      "method.diffusion.num_timesteps=10")
    stage2.paths.output_dir = str(tmp_path / "stage2")
    metrics = train(stage2)
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))

    checkpoint = tmp_path / "stage2" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(checkpoint)["hyper_parameters"]["autoencoder_ckpt"] is None  # weights travel inside
    latent = load_method(checkpoint)
    encoder = load_method(autoencoder_ckpt)
    for name, value in encoder.state_dict().items():  # frozen: the stage-1 EMA weights (averaging a constant
        assert torch.allclose(latent.autoencoder.state_dict()[name], value, atol=1e-6), name  # moves it by rounding)
    assert bool((latent.latent_std > 0).all())  # measured before the EMA callback copied the module
    fields = latent.sample(2, generator=torch.Generator().manual_seed(0), resolution=16, name="ddim", steps=4)
    assert fields.domain.shape == (16, 16) and torch.isfinite(fields.values).all()
