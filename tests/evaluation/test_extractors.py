"""Feature extractors: the project classifiers' verified cache, CLIP from a local directory, Inception's error,
the registry and input handling."""
import gzip
import json
import logging

import numpy as np
import pytest
import torch

import evaluation.extractors as extractors
from evaluation.extractors import default_extractor_name, get_extractor
from evaluation.extractors.classifier import ClassifierExtractor

TINY = {"epochs": 1, "max_train_items": 256}  # seconds to train: caching behaviour, not accuracy


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDGEN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "extractors"


def _images(num=6, size=8, channels=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num, size, size, channels), dtype=np.uint8)


def test_classifier_trains_once_then_loads_from_cache(own_cache, capsys):
    first = ClassifierExtractor("digits-cnn", **TINY)
    assert "test accuracy" in capsys.readouterr().out
    (weights,) = own_cache.glob("digits-cnn-*.pt")
    sidecar = json.loads((own_cache / (weights.name + ".json")).read_text())
    assert sidecar["sha256"] == first.fingerprint and sidecar["metadata"]["epochs"] == 1
    second = ClassifierExtractor("digits-cnn", **TINY)
    assert capsys.readouterr().out == ""  # loaded, not retrained
    torch.testing.assert_close(first.features(_images()), second.features(_images()))
    assert second.test_accuracy == first.test_accuracy


@pytest.mark.parametrize("damage", ["corrupt_weights", "edited_metadata", "garbage_sidecar", "missing_sidecar"])
def test_a_damaged_cache_is_retrained_not_trusted(own_cache, capsys, caplog, damage):
    first = ClassifierExtractor("digits-cnn", **TINY)
    reference = first.features(_images())
    (weights,) = own_cache.glob("digits-cnn-*.pt")
    sidecar = own_cache / (weights.name + ".json")
    if damage == "corrupt_weights":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "edited_metadata":
        record = json.loads(sidecar.read_text())
        record["metadata"]["seed"] = 123
        sidecar.write_text(json.dumps(record))
    elif damage == "garbage_sidecar":
        sidecar.write_text("{not json")
    else:
        sidecar.unlink()
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        retrained = ClassifierExtractor("digits-cnn", **TINY)
    assert "test accuracy" in capsys.readouterr().out
    assert damage == "missing_sidecar" or "retrain" in caplog.text or "rebuilding" in caplog.text
    torch.testing.assert_close(retrained.features(_images()), reference)  # seeded training reproduces it
    assert json.loads(sidecar.read_text())["sha256"] == retrained.fingerprint


def test_classifier_outputs_and_input_handling(own_cache):
    extractor = ClassifierExtractor("digits-cnn", **TINY)
    features, logits = extractor.features_and_logits(_images(5))
    assert features.shape == (5, 128) and logits.shape == (5, 10) and features.dtype == torch.float32
    assert extractor.features(_images(3, size=16, channels=3)).shape == (3, 128)  # RGB and resized
    assert extractor.features(torch.from_numpy(_images(2))[..., 0]).shape == (2, 128)  # (N, H, W)
    with pytest.raises(TypeError, match="uint8"):
        extractor.features(np.zeros((2, 8, 8, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="\\(N, H, W, C\\)"):
        extractor.features(np.zeros((2, 8, 8, 2), dtype=np.uint8))


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_classifier_trains_from_idx_files(tmp_path, own_cache, capsys):
    rng = np.random.default_rng(0)
    for prefix, num in (("train", 64), ("t10k", 32)):
        labels = rng.integers(0, 10, num)
        images = np.clip(labels[:, None, None] * 25 + rng.integers(0, 20, (num, 28, 28)), 0, 255)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images, 0x00000803)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x00000801)
    extractor = get_extractor("fashion-cnn", data_dir=tmp_path, epochs=1)
    assert "fashion-cnn" in capsys.readouterr().out
    assert extractor.features(_images(4, size=28)).shape == (4, 128)


def test_registry_and_dataset_defaults(monkeypatch):
    with pytest.raises(ValueError, match="valid names: inception, clip, digits-cnn, fashion-cnn"):
        get_extractor("vgg")
    assert default_extractor_name("digits") == "digits-cnn"
    assert default_extractor_name("fashion_mnist") == "fashion-cnn"
    monkeypatch.setattr(extractors, "inception_available", lambda weights=None: False)
    with pytest.raises(ValueError, match="'clip'"):
        default_extractor_name("cifar10")
    monkeypatch.setattr(extractors, "inception_available", lambda weights=None: True)
    assert default_extractor_name("cifar10") == "inception"


def test_inception_without_torch_fidelity_or_weights_names_the_alternatives(tmp_path):
    with pytest.raises(RuntimeError, match="torch-fidelity.*digits-cnn"):
        get_extractor("inception", weights_path=tmp_path / "absent.pth")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=12)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLIPModel(config)
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    return path


def test_clip_features_from_a_local_directory(tiny_clip_dir):
    extractor = get_extractor("clip", model_dir=tiny_clip_dir, batch_size=4)
    features = extractor.features(_images(6, size=20, channels=3))
    assert features.shape == (6, 12)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(6))
    wide = np.random.default_rng(1).integers(0, 256, (2, 24, 40, 1), dtype=np.uint8)  # grey, not square
    assert extractor.features(wide).shape == (2, 12)
    square = _images(3, size=32, channels=3)
    raw = get_extractor("clip", model_dir=tiny_clip_dir, normalize=False).features(square)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=1), extractor.features(square))
    with pytest.raises(ValueError, match="no classifier head"):
        extractor.logits(_images(2, channels=3))


def test_clip_without_a_local_directory_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("FIELDGEN_CLIP_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="local CLIP model directory"):
        get_extractor("clip", model_dir=tmp_path / "absent")


def test_first_use_inside_inference_mode_still_trains(own_cache):
    with torch.inference_mode():  # as inside a Lightning validation loop
        extractor = ClassifierExtractor("digits-cnn", **TINY)
    assert extractor.features(_images(2)).shape == (2, 128)
