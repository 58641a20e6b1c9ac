"""The project's own feature networks: small CNN classifiers for digits (8x8) and Fashion-MNIST (28x28).

Trained reproducibly on first use (seeded, on CPU in seconds for digits), cached under
`$FIELDGEN_CACHE_DIR/extractors` with a sha256 + settings sidecar; a missing, corrupt or mismatching cache is
retrained, never trusted. Features are the penultimate activations, logits the 10-way head (for IS).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evaluation.cache import cache_dir, load_verified, save_verified, sha256_file
from datamodules.images import levels_to_full_range
from evaluation.extractors.base import FeatureExtractor

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the network or the training recipe changes


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything that determines a trained classifier: its cache is keyed on all of it."""

    name: str
    dataset: str  # "digits" | "fashion_mnist"
    input_size: int
    num_pools: int  # conv blocks, each ending in a 2x2 max-pool: 1 for 8x8, 2 for 28x28
    convs_per_block: int = 2
    width: int = 32
    feature_dim: int = 128
    num_classes: int = 10
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    test_fraction: float = 0.2  # held out of datasets with a single "all" split (digits)
    max_train_items: Optional[int] = None


CLASSIFIERS = {
    "digits-cnn": ClassifierSpec("digits-cnn", "digits", input_size=8, num_pools=1, epochs=20),
    "fashion-cnn": ClassifierSpec("fashion-cnn", "fashion_mnist", input_size=28, num_pools=2, convs_per_block=1,
                                  epochs=3, batch_size=128),
}


class SmallCNN(nn.Module):
    """(conv-ReLU)^k-pool blocks, then a ReLU feature layer (the embedding) and a linear classifier head."""

    def __init__(self, spec: ClassifierSpec):
        super().__init__()
        layers, channels = [], 1
        for block in range(spec.num_pools):
            out = spec.width * 2 ** block
            for _ in range(spec.convs_per_block):
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        side = spec.input_size // 2 ** spec.num_pools
        self.embed = nn.Sequential(nn.Linear(channels * side * side, spec.feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(spec.feature_dim, spec.num_classes))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 1, S, S) in [0, 1] -> features (B, feature_dim), logits (B, num_classes)."""
        features = self.embed(self.trunk(x * 2 - 1))
        return features, self.head(features)


def labelled_splits(spec: ClassifierSpec, data_dir: Optional[Union[str, Path]] = None
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "test"}: (uint8 images (N, H, W, 1) in 0..255, int64 labels) from the project's source readers;
    a single-split dataset is cut by a permutation seeded with `spec.seed`."""
    if spec.dataset == "digits":
        from datamodules.sources.digits import Digits

        source = Digits()
    elif spec.dataset == "fashion_mnist":
        from datamodules.sources.idx import FashionMNIST

        source = FashionMNIST(data_dir)
    else:
        raise ValueError(f"no classifier data for dataset '{spec.dataset}'; known: digits, fashion_mnist")
    images, labels = source.splits(), source.labels()
    if "all" in images:
        order = np.random.default_rng(spec.seed).permutation(len(images["all"]))
        num_test = int(round(len(order) * spec.test_fraction))
        parts = {"test": order[:num_test], "train": order[num_test:]}
        images = {k: images["all"][idx] for k, idx in parts.items()}
        labels = {k: labels["all"][idx] for k, idx in parts.items()}
    missing = {"train", "test"} - set(labels)
    if missing:
        raise FileNotFoundError(f"{spec.dataset} labels for splits {sorted(missing)} are absent; the classifier "
                                "needs the label files next to the images")
    return {split: (levels_to_full_range(images[split], source.num_levels), labels[split]) for split in ("train", "test")}


def _as_input(images: np.ndarray, size: int) -> Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


def accuracy(model: SmallCNN, images: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(chunk)[1].argmax(1) for chunk in images.split(batch_size)])
    return float((predictions == labels).double().mean())


def _fit(spec: ClassifierSpec, train_x: Tensor, train_y: Tensor) -> SmallCNN:
    torch.manual_seed(spec.seed)  # weight init and dropout (the caller forks the global RNG)
    model = SmallCNN(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    steps = spec.epochs * -(-len(train_x) // spec.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=steps)
    shuffle = torch.Generator().manual_seed(spec.seed)
    model.train()
    for _ in range(spec.epochs):
        for batch in torch.randperm(len(train_x), generator=shuffle).split(spec.batch_size):
            loss = F.cross_entropy(model(train_x[batch])[1], train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def train_classifier(spec: ClassifierSpec, data_dir: Optional[Union[str, Path]] = None) -> tuple[SmallCNN, float]:
    """Seeded Adam training on the train split; returns the model and its test accuracy. The caller's global
    RNG state and thread count are restored afterwards."""
    splits = labelled_splits(spec, data_dir)
    train_x, train_y = _as_input(splits["train"][0], spec.input_size), torch.from_numpy(splits["train"][1])
    if spec.max_train_items is not None:
        train_x, train_y = train_x[: spec.max_train_items], train_y[: spec.max_train_items]
    threads = torch.get_num_threads()
    try:
        # one CPU thread: the weights do not depend on the machine's core count, and this tiny net is no slower
        torch.set_num_threads(1)
        # trainable even when first used inside a Lightning validation loop (inference mode)
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            model = _fit(spec, train_x.clone(), train_y.clone())
        test_x, test_y = _as_input(splits["test"][0], spec.input_size), torch.from_numpy(splits["test"][1])
        return model, accuracy(model, test_x, test_y)
    finally:
        torch.set_num_threads(threads)


def _cache_path(spec: ClassifierSpec) -> tuple[Path, dict]:
    metadata = {"version": CACHE_VERSION, "torch": torch.__version__.split("+")[0], **dataclasses.asdict(spec)}
    key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir("extractors") / f"{spec.name}-{key}.pt", metadata


def load_or_train(spec: ClassifierSpec, data_dir: Optional[Union[str, Path]] = None) -> tuple[SmallCNN, float, str]:
    """The cached classifier if it verifies, else a freshly trained one (then cached). Returns (model, test
    accuracy, sha256 of the weights file)."""
    path, metadata = _cache_path(spec)
    cached = load_verified(path, metadata)
    if cached is not None:
        model = SmallCNN(spec)
        try:
            model.load_state_dict(cached["state_dict"])
            return model.eval(), float(cached["test_accuracy"]), sha256_file(path)
        except (KeyError, RuntimeError) as err:
            log.warning("cached %s at %s does not fit the network (%s); retraining", spec.name, path, err)
    elif path.exists():
        log.warning("cached %s at %s failed verification; retraining", spec.name, path)
    model, test_accuracy = train_classifier(spec, data_dir)
    print(f"[fieldgen] trained feature network {spec.name} on {spec.dataset}: test accuracy {test_accuracy:.4f}")
    sha = save_verified({"state_dict": model.state_dict(), "test_accuracy": test_accuracy}, path, metadata)
    return model, test_accuracy, sha


class ClassifierExtractor(FeatureExtractor):
    """Features and logits of a project classifier ("digits-cnn", "fashion-cnn"); trains it on first use.

    `overrides` replace fields of the registered spec (e.g. epochs=1 for tests); they change the cache key.
    """

    channels = 1
    has_logits = True

    def __init__(self, name: str = "digits-cnn", device: Union[str, torch.device] = "cpu", batch_size: int = 1024,
                 data_dir: Optional[Union[str, Path]] = None, **overrides):
        super().__init__(device, batch_size)
        if name not in CLASSIFIERS:
            raise ValueError(f"unknown classifier '{name}'; known: {sorted(CLASSIFIERS)}")
        self.spec = dataclasses.replace(CLASSIFIERS[name], **overrides)
        self.name, self.input_size = name, (self.spec.input_size, self.spec.input_size)
        model, self.test_accuracy, self.fingerprint = load_or_train(self.spec, data_dir)
        self.model = model.to(self.device)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(x)
