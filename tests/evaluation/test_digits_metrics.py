"""Image metrics end to end on real digits with the project's digits-cnn (trained once per session)."""
import math

import numpy as np
import pytest
import torch

from evaluation.image_metrics import fid
from datamodules.images import levels_to_full_range
from evaluation.reference_stats import reference_features
from evaluation.sample_metrics import score_samples


def _noise(num, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num, 8, 8, 1), dtype=np.uint8)


def test_digits_classifier_is_accurate(digits_cnn):
    assert digits_cnn.name == "digits-cnn" and digits_cnn.test_accuracy > 0.95


def test_fid_real_test_vs_train_is_far_below_noise_vs_train(digits_cnn, digits_splits):
    train, test = digits_splits["train"][0], digits_splits["test"][0]
    train_features = digits_cnn.features(train)
    real = fid(digits_cnn.features(test), train_features)
    noise = fid(digits_cnn.features(_noise(len(test))), train_features)
    assert real < 0.05 * noise, (real, noise)


def test_score_samples_names_metrics_by_extractor_and_takes_raw_levels(digits_cnn, digits_splits):
    from datamodules.sources.digits import Digits

    raw = Digits().splits()["all"][:200]  # grey levels 0..16
    train = digits_splits["train"][0]
    scores = score_samples(raw, "digits", ["fid", "kid", "is", "precision_recall", "confidence"], digits_cnn,
                           reference_images=train, num_levels=17, kid_subset_size=100, kid_subsets=10)
    assert set(scores) == {f"{m}[digits-cnn]" for m in ("fid", "kid", "kid_std", "is", "is_std", "precision",
                                                         "recall", "confident", "min_class_share")}
    expected = fid(train_features := digits_cnn.features(train), digits_cnn.features(levels_to_full_range(raw, 17)))
    assert scores["fid[digits-cnn]"] == pytest.approx(expected)
    assert all(math.isfinite(value) for value in scores.values()), scores
    assert scores["is[digits-cnn]"] > 5 and scores["is_std[digits-cnn]"] >= 0 and scores["kid_std[digits-cnn]"] >= 0
    assert 0.8 < scores["precision[digits-cnn]"] <= 1 and 0 <= scores["recall[digits-cnn]"] <= 1
    noise_scores = score_samples(_noise(200), "digits", ["fid", "is", "confidence"], digits_cnn,
                                 reference_images=train)
    assert noise_scores["fid[digits-cnn]"] > 10 * scores["fid[digits-cnn]"]
    assert scores["confident[digits-cnn]"] > 0.9 > 0.5 > noise_scores["confident[digits-cnn]"]
    assert 0.05 < scores["min_class_share[digits-cnn]"] <= 0.1 > noise_scores["min_class_share[digits-cnn]"]
    assert train_features.shape == (len(train), 128)
    with pytest.raises(ValueError, match="num_levels=17"):
        score_samples(_noise(10), "digits", ["fid"], digits_cnn, reference_images=train, num_levels=17)
    with pytest.raises(ValueError, match="valid: fid, kid, is, precision_recall, confidence"):
        score_samples(raw, "digits", ["fid", "lpips"], digits_cnn, reference_images=train)
    with pytest.raises(ValueError, match="reference_images or load_reference"):
        score_samples(raw, "digits", ["kid"], digits_cnn, num_levels=17)


def test_reference_features_are_cached_per_key_and_recomputed_when_corrupt(digits_cnn, digits_splits, tmp_path,
                                                                           monkeypatch, caplog):
    monkeypatch.setenv("FIELDGEN_CACHE_DIR", str(tmp_path))
    calls = []

    def load():
        calls.append(1)
        return digits_splits["train"][0]

    first = reference_features(digits_cnn, "digits", "train", load, max_items=300)
    assert len(calls) == 1 and first["features"].shape == (300, 128) and first["logits"].shape == (300, 10)
    again = reference_features(digits_cnn, "digits", "train", load, max_items=300)
    assert len(calls) == 1
    torch.testing.assert_close(again["sigma"], first["sigma"])
    reference_features(digits_cnn, "digits", "train-other", load, max_items=300)
    assert len(calls) == 2  # another split key (other indices or transforms) is another entry
    (cached,) = [p for p in (tmp_path / "reference").glob("digits-train-digits-cnn-*.pt")]
    cached.write_bytes(cached.read_bytes()[:-10])
    recomputed = reference_features(digits_cnn, "digits", "train", load, max_items=300)
    assert len(calls) == 3 and "sha256" in caplog.text
    torch.testing.assert_close(recomputed["mu"], first["mu"])
