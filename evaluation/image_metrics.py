"""Sample-quality metrics on precomputed features: FID, KID, Inception Score, k-NN precision/recall.

Inputs are (N, D) feature (or (N, K) logit) tensors or arrays from one extractor; statistics are float64.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[Tensor, np.ndarray]


def _as_float64(x: ArrayLike, name: str, ndim: int = 2) -> Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; check the samples and the extractor")
    return x


def _check_pair(a: Tensor, b: Tensor, min_count: int = 2) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension ({a.shape[1]} vs {b.shape[1]}): they must come from "
                         "the same extractor")
    if min(len(a), len(b)) < min_count:
        raise ValueError(f"need at least {min_count} samples per set, got {len(a)} and {len(b)}")


def feature_statistics(features: ArrayLike) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) in float64."""
    features = _as_float64(features, "features")
    if len(features) < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {len(features)}")
    return features.mean(0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians, in float64.

    tr (S1 S2)^(1/2) is computed as the sum of square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), which is
    symmetric PSD and similar to S1 S2: no complex parts to discard, and singular covariances are fine.
    """
    mu1, mu2 = _as_float64(mu1, "mu1", 1), _as_float64(mu2, "mu2", 1)
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if not (mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == (len(mu1), len(mu1))):
        raise ValueError(f"shape mismatch: mu {tuple(mu1.shape)}, {tuple(mu2.shape)}; "
                         f"sigma {tuple(sigma1.shape)}, {tuple(sigma2.shape)}")
    eigvals, eigvecs = torch.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt_sigma1 = (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance.clamp(min=0))  # exact zero for identical inputs up to rounding


def fid(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Fréchet distance between Gaussian fits of two feature sets."""
    a, b = _as_float64(features_a, "features_a"), _as_float64(features_b, "features_b")
    _check_pair(a, b)
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def _polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(x, y) = (x.y / D + 1)^3 over the last two dims (Bińkowski et al. 2018)."""
    return (x @ y.transpose(-1, -2) / x.shape[-1] + 1) ** 3


def kid(features_a: ArrayLike, features_b: ArrayLike, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, subsets_per_chunk: int = 10) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over `subsets` random subsets of the unbiased MMD^2 estimate.

    `subset_size` is clamped to the smaller set. Subsets are drawn with a seeded generator, batched over subsets.
    """
    # torchmetrics' KID feeds images through a module and draws subsets from the global RNG; on precomputed
    # features a seeded, batched estimator is this short.
    a, b = _as_float64(features_a, "features_a"), _as_float64(features_b, "features_b")
    _check_pair(a, b)
    m = min(subset_size, len(a), len(b))
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for start in range(0, subsets, subsets_per_chunk):
        count = min(subsets_per_chunk, subsets - start)
        x = a[torch.rand(count, len(a), generator=generator).argsort(1)[:, :m]]  # (S, m, D) without replacement
        y = b[torch.rand(count, len(b), generator=generator).argsort(1)[:, :m]]
        k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        off_diagonal = lambda k: k.sum((1, 2)) - k.diagonal(dim1=1, dim2=2).sum(1)  # noqa: E731
        estimates.append((off_diagonal(k_xx) + off_diagonal(k_yy)) / (m * (m - 1)) - 2 * k_xy.sum((1, 2)) / m**2)
    estimates = torch.cat(estimates)
    return float(estimates.mean()), float(estimates.std(unbiased=False))


def inception_score(logits: ArrayLike, splits: int = 10) -> tuple[float, float]:
    """exp E_x KL(p(y|x) || p(y)) on `splits` consecutive parts of the logits; returns (mean, std) over parts."""
    log_p = torch.log_softmax(_as_float64(logits, "logits"), dim=1)
    if len(log_p) < splits:
        raise ValueError(f"inception_score needs at least splits={splits} samples, got {len(log_p)}")
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(len(part))
        scores.append((part.exp() * (part - log_marginal)).sum(1).mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def classifier_confidence(logits: ArrayLike, threshold: float = 0.9) -> dict[str, float]:
    """How clean class-conditional samples look to a classifier: the share of samples whose top softmax probability
    is >= threshold ("confident"), and the smallest share of any class among the argmax labels ("min_class_share",
    1 / num_classes when balanced; a dropped mode gives 0)."""
    probs = torch.softmax(_as_float64(logits, "logits"), dim=1)
    if len(probs) == 0:
        raise ValueError("classifier_confidence needs at least one sample's logits")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"classifier_confidence threshold is a probability in (0, 1), got {threshold}")
    shares = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / len(probs)
    return {"confident": float((probs.max(1).values >= threshold).double().mean()),
            "min_class_share": float(shares.min())}


def _squared_distances(x: Tensor, y: Tensor) -> Tensor:
    return ((x * x).sum(1, keepdim=True) + (y * y).sum(1) - 2 * x @ y.T).clamp(min=0)


def _chunk_rows(num_columns: int, budget: int = 1 << 24) -> int:
    """Rows per chunk so a (rows, num_columns) float64 block stays near `budget` elements."""
    return max(1, budget // max(num_columns, 1))


def _knn_radii(features: Tensor, k: int) -> Tensor:
    """Squared distance of every point to its k-th nearest other point of the same set."""
    if len(features) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {len(features)}")
    step = _chunk_rows(len(features))
    return torch.cat([_squared_distances(chunk, features).kthvalue(k + 1, dim=1).values  # +1: the point itself
                      for chunk in features.split(step)])


def _in_manifold(queries: Tensor, support: Tensor, radii: Tensor) -> Tensor:
    """(Nq,) bool: whether each query lies in some ball (support_j, radius_j)."""
    tolerance = 1e-10 * (support * support).sum(1).max()  # float64 rounding: a point is inside its own ball
    step = _chunk_rows(len(support))
    return torch.cat([(_squared_distances(chunk, support) <= radii + tolerance).any(1)
                      for chunk in queries.split(step)])


def precision_recall(real_features: ArrayLike, fake_features: ArrayLike, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN hypersphere manifolds.

    precision: fraction of fake samples inside the real manifold; recall: fraction of real inside the fake one.
    """
    real, fake = _as_float64(real_features, "real_features"), _as_float64(fake_features, "fake_features")
    _check_pair(real, fake, min_count=k + 1)
    precision = _in_manifold(fake, real, _knn_radii(real, k)).double().mean()
    recall = _in_manifold(real, fake, _knn_radii(fake, k)).double().mean()
    return {"precision": float(precision), "recall": float(recall)}

