"""DietNeRF's semantic-consistency loss, its encoders and the fine-tuning phase."""
import pytest
import torch

from datamodules.fields import Grid, Rays
from evaluation.extractors.image_embedders import CLIPViTEmbedder, ViTEmbedder
from lightning_modules.dietnerf import DietNeRF, jittered_grid, semantic_consistency
from lightning_modules.view_encoder import ProjectViewEncoder, ViewEncoderModule

DOMAIN = Rays((16, 16), focal=20.0)
ENCODER = {"_target_": "lightning_modules.view_encoder.ProjectViewEncoder", "net": {"channels": [8], "groups": 4,
                                                                                    "embedding_dim": 8}}


def make_dietnerf(weight: float = 0.1) -> DietNeRF:
    torch.manual_seed(0)
    model = DietNeRF(semantic={"every": 1, "weight": weight, "weight_coarse": weight, "render_size": 8,
                               "encoder": ENCODER, "checkpoint": True},
                     net={"position_frequencies": 2, "direction_frequencies": 1, "depth": 2, "width": 8, "skips": []},
                     rays_per_step=16, num_coarse=8, num_fine=4, domain=DOMAIN.spec(), signal_dim=3, num_levels=None,
                     optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
    encoder = ProjectViewEncoder(net=ENCODER["net"])
    model._frozen = (encoder, torch.randn(3, 8))
    return model.train()


def test_the_semantic_loss_reaches_both_networks_and_never_the_encoder():
    model = make_dietnerf()
    terms = model.semantic_losses()
    assert set(terms) == {"coarse", "fine"}
    sum(terms.values()).backward()
    for name in ("coarse", "fine"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    encoder = model.encoder
    assert not encoder.training and all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    assert "encoder" not in dict(model.named_modules()) and not any("network" in k for k in model.state_dict())


def test_checkpointed_and_plain_renders_give_the_same_gradients():
    grads = []
    for checkpointed in (True, False):
        model = make_dietnerf()
        model.semantic["checkpoint"] = checkpointed
        torch.manual_seed(5)
        sum(model.semantic_losses().values()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.coarse.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_a_render_equal_to_its_target_gives_minus_lambda():
    encoder = ProjectViewEncoder(net=ENCODER["net"])
    image = torch.rand(1, 3, 16, 16)
    assert float(semantic_consistency(encoder, image, encoder(image), 0.1)) == pytest.approx(-0.1, abs=1e-6)
    other = torch.rand(1, 3, 16, 16)
    assert float(semantic_consistency(encoder, other, encoder(image), 0.1)) > -0.1


def test_the_jittered_grid_reproduces_the_official_168_of_400_window():
    offsets = set()
    for seed in range(200):
        index = jittered_grid(400, 400, 168, torch.Generator().manual_seed(seed))
        rows, cols = index // 400, index % 400
        assert len(index) == 168 ** 2 and (rows.reshape(168, 168).diff(dim=0) == 2).all()
        offsets.add(int(rows.min()))
        assert rows.max() - rows.min() == 334 and rows.max() < 400 and cols.max() < 400
    assert min(offsets) == 0 and max(offsets) == 63  # U[0, 400 mod 168)
    assert jittered_grid(16, 16, 8).tolist()[:3] == [0, 2, 4]  # 16 mod 8 = 0: no jitter
    with pytest.raises(ValueError, match="render_size=20 exceeds"):
        jittered_grid(16, 16, 20)


def test_encoders_from_local_directories_give_the_class_token_before_the_final_norm(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTModel

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    CLIPVisionModel(config).save_pretrained(tmp_path / "clip")
    encoder = CLIPViTEmbedder(str(tmp_path / "clip"))
    images = torch.rand(2, 3, 20, 20, requires_grad=True)
    features = encoder(images)
    pixels = (torch.nn.functional.interpolate(images, size=(32, 32), mode="bicubic", align_corners=False)
              - encoder.mean) / encoder.std
    outputs = encoder.model(pixel_values=pixels)
    torch.testing.assert_close(features, outputs.last_hidden_state[:, 0])
    assert not torch.allclose(features, outputs.pooler_output)  # pooler_output is after post_layernorm
    features.sum().backward()
    assert images.grad.abs().sum() > 0 and all(p.grad is None for p in encoder.parameters())
    ViTModel(ViTConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                       image_size=32, patch_size=8)).save_pretrained(tmp_path / "vit")
    assert ViTEmbedder(str(tmp_path / "vit"))(torch.rand(1, 3, 8, 8)).shape == (1, 32)
    with pytest.raises(FileNotFoundError, match="method.semantic.encoder.path=DIR.*experiment=view_encoder_procedural"):
        CLIPViTEmbedder(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="no view-encoder checkpoint"):
        ProjectViewEncoder(ckpt_path=str(tmp_path / "absent.ckpt"))


def test_the_view_encoder_pairs_the_two_halves_of_a_batch():
    torch.manual_seed(0)
    module = ViewEncoderModule(net={"channels": [8, 8], "embedding_dim": 8, "groups": 4}, domain=Grid((16, 16)),
                               signal_dim=3, num_levels=None, optimizer={}).eval()
    from datamodules.fields import FieldBatch

    scenes = torch.rand(3, 3, 16, 16) * 2 - 1
    batch = FieldBatch.from_dense(torch.cat([scenes, scenes]), Grid((16, 16)))  # identical pairs: easy positives
    losses = module.compute_losses(batch)
    assert losses["loss"].shape == (6,) and (losses["cos_positive"] > 0.999).all()
    assert losses["accuracy"].mean() == 1.0
