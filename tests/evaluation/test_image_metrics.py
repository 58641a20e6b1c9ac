"""FID, KID, IS, classifier confidence and precision/recall against closed forms, invariants and hand-made sets."""
import numpy as np
import pytest
import scipy.linalg
import torch

from evaluation.image_metrics import classifier_confidence, feature_statistics, fid, frechet_distance, inception_score, kid, precision_recall


def _with_moments(rng, num, mean, cov):
    """Samples whose empirical mean and (unbiased) covariance are exactly `mean` and `cov`."""
    z = rng.standard_normal((num, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z.T)))).T  # empirical covariance exactly I
    return z @ np.linalg.cholesky(cov).T + mean


def _random_spd(rng, dim):
    a = rng.standard_normal((dim, dim))
    return a @ a.T + 0.1 * np.eye(dim)


def _closed_form(mu1, s1, mu2, s2):
    """Fréchet distance via scipy's sqrtm (an independent route to the same number)."""
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


def test_fid_of_gaussian_feature_sets_equals_closed_form():
    rng = np.random.default_rng(0)
    dim = 6
    mu1, mu2, s1, s2 = rng.standard_normal(dim), rng.standard_normal(dim), _random_spd(rng, dim), _random_spd(rng, dim)
    a, b = _with_moments(rng, 500, mu1, s1), _with_moments(rng, 700, mu2, s2)
    assert fid(a, b) == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-9)


def test_fid_one_dimensional_is_mean_and_std_gap():
    rng = np.random.default_rng(1)
    a = _with_moments(rng, 100, np.array([1.0]), np.array([[4.0]]))
    b = _with_moments(rng, 50, np.array([-2.0]), np.array([[9.0]]))
    assert fid(a, b) == pytest.approx((1 + 2) ** 2 + (2 - 3) ** 2, rel=1e-10)


def test_fid_of_a_set_against_itself_is_zero_even_when_rank_deficient():
    rng = np.random.default_rng(2)
    features = torch.from_numpy(rng.standard_normal((40, 64))).float()  # 40 < 64: singular covariance
    assert fid(features, features) == pytest.approx(0.0, abs=1e-6)
    mu, sigma = feature_statistics(features)
    assert sigma.dtype == torch.float64 and sigma.shape == (64, 64)


def test_fid_rejects_bad_input():
    with pytest.raises(ValueError, match="same extractor"):
        fid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        fid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fid(np.full((5, 3), np.nan), np.zeros((5, 3)))


def _biased_mmd(x, y):
    kernel = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def test_kid_is_unbiased_on_identical_distributions():
    rng = np.random.default_rng(3)
    repeats, size = 400, 16
    unbiased, biased = [], []
    for _ in range(repeats):
        x, y = rng.standard_normal((size, 4)), rng.standard_normal((size, 4))
        unbiased.append(kid(x, y, subsets=1, subset_size=size)[0])
        biased.append(_biased_mmd(x, y))
    unbiased, biased = np.array(unbiased), np.array(biased)
    standard_error = unbiased.std() / np.sqrt(repeats)
    assert abs(unbiased.mean()) < 3 * standard_error
    assert biased.mean() > 10 * standard_error  # the V-statistic's bias is detectable at this sample size


def test_kid_matches_torchmetrics_estimator_and_detects_shift():
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((30, 8)), rng.standard_normal((30, 8)) + 1.0
    expected = float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    mean, std = kid(x, y, subsets=5, subset_size=30)  # full-size subsets are permutations: same value each time
    assert mean == pytest.approx(expected, rel=1e-10) and std == pytest.approx(0.0, abs=1e-10)
    assert kid(x, y, subsets=20, subset_size=10, seed=1) == kid(x, y, subsets=20, subset_size=10, seed=1)
    assert mean > 0.5


def test_inception_score_extremes():
    num_classes = 10
    confident = torch.full((100, num_classes), -1e4)
    confident[torch.arange(100), torch.arange(100) % num_classes] = 0.0  # one-hot, balanced classes
    mean, std = inception_score(confident, splits=5)
    assert mean == pytest.approx(num_classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    mean, _ = inception_score(torch.zeros(50, num_classes), splits=5)  # uniform predictions
    assert mean == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least splits"):
        inception_score(torch.zeros(3, num_classes), splits=10)


def test_classifier_confidence_counts_sure_samples_and_the_rarest_class():
    # softmax of [log p, log (1-p)/9 x 9] has top probability p: p = 0.95, 0.92, 0.5 for 6, 2, 2 samples
    probs = torch.tensor([0.95] * 6 + [0.92] * 2 + [0.5] * 2, dtype=torch.float64)
    logits = torch.log(((1 - probs) / 9)[:, None]).repeat(1, 10)
    classes = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])  # classes 7, 8, 9 never predicted
    logits[torch.arange(10), classes] = torch.log(probs)
    scores = classifier_confidence(logits, threshold=0.9)
    assert scores["confident"] == pytest.approx(0.8)
    assert scores["min_class_share"] == 0.0
    balanced = torch.eye(10).repeat(3, 1) * 20.0
    assert classifier_confidence(balanced) == pytest.approx({"confident": 1.0, "min_class_share": 0.1})
    with pytest.raises(ValueError, match="threshold"):
        classifier_confidence(balanced, threshold=1.0)


def test_precision_recall_of_a_set_against_itself_is_one():
    rng = np.random.default_rng(5)
    features = rng.standard_normal((300, 32)) * 50
    features[10:20] = features[0]  # duplicates: zero radii must still contain their own points
    assert precision_recall(features, features, k=3) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_hand_made_sets():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: 1 each
    fake = np.array([[0.5], [10.0]])  # k=1 radii: 9.5 each
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}
    far = real + 100
    assert precision_recall(real, far, k=1) == {"precision": 0.0, "recall": 0.0}
