"""Image readers on small files written in the real formats: IDX gz, CIFAR-10 python batches, image folders."""
import gzip
import os
import pickle
import re

import numpy as np
import pytest
from PIL import Image

from datamodules.sources.cifar10 import CIFAR10, load_batch
from datamodules.sources.digits import Digits
from datamodules.sources.errors import DatasetNotFoundError
from datamodules.sources.idx import MNIST, FashionMNIST, read_idx
from datamodules.sources.image_folder import ImageFolder
from datamodules.sources.lfw import LFWFaces
from fake_datasets import write_cifar_batch, write_cifar_batches, write_idx, write_idx_folder, write_image_folder


@pytest.fixture
def mnist_dir(tmp_path):
    return write_idx_folder(tmp_path, num_train=5, num_test=3)


def test_sources_digits():
    digits = Digits()
    images = digits.splits()["all"]
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8 and images.max() == 16
    assert (digits.channels, digits.num_levels, digits.item_shape) == (1, 17, (8, 8, 1))
    assert digits.labels()["all"].shape == (1797,)


def test_sources_idx_reads_images_and_labels(mnist_dir):
    mnist = MNIST(mnist_dir)
    splits = mnist.splits()
    assert splits["train"].shape == (5, 28, 28, 1) and splits["test"].shape == (3, 28, 28, 1)
    raw = np.frombuffer(gzip.open(mnist_dir / "train-images-idx3-ubyte.gz").read()[16:], np.uint8)
    assert np.array_equal(splits["train"].ravel(), raw)
    assert mnist.labels()["test"].shape == (3,) and mnist.labels()["test"].dtype == np.int64


def test_sources_idx_uncompressed_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    assert FashionMNIST(tmp_path).splits()["train"].shape == (2, 28, 28, 1)


def test_sources_idx_absent_names_the_paths(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "nothing"))) as error:
        MNIST(tmp_path / "nothing")
    assert isinstance(error.value, FileNotFoundError)
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=f"(?s){re.escape(str(tmp_path / 'mnist'))}.*train-images"):
        MNIST()
    assert "/usr/share/datasets/fashion-mnist" in FashionMNIST.default_dirs  # Debian's dataset-fashion-mnist


def test_sources_idx_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.gz"
    write_idx(bad, np.zeros((2, 28, 28)), magic=0x12340803)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    labels_as_images = tmp_path / "labels.gz"
    write_idx(labels_as_images, np.zeros(4))
    with pytest.raises(ValueError, match="0x00000803"):
        read_idx(labels_as_images, expected_magic=0x00000803)
    truncated = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(truncated, np.zeros((2, 28, 28)))
    data = gzip.open(truncated).read()
    with gzip.open(truncated, "wb") as f:
        f.write(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        MNIST(tmp_path).splits()
    (tmp_path / "not-gzip.gz").write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match="unreadable"):
        read_idx(tmp_path / "not-gzip.gz")


def test_sources_idx_label_count_mismatch(mnist_dir):
    write_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(7))
    with pytest.raises(ValueError, match="7 labels for 3 images"):
        MNIST(mnist_dir).labels()


@pytest.fixture
def cifar_dir(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    write_cifar_batches(tmp_path / "cifar-10-batches-py", images[:10], [0, 1, 1, 2, 2, 3, 3, 4, 4, 5],
                        images[10:], [7, 8])
    return tmp_path, images


def test_sources_cifar10_reads_python_batches(cifar_dir):
    root, images = cifar_dir
    cifar = CIFAR10(root)
    splits = cifar.splits()
    assert np.array_equal(splits["train"], images[:10]) and np.array_equal(splits["test"], images[10:])
    assert cifar.labels()["train"].tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert CIFAR10(root / "cifar-10-batches-py").splits()["test"].shape == (2, 32, 32, 3)


def test_sources_cifar10_refuses_code_in_pickles(tmp_path):
    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Exploit()}, protocol=4))
    with pytest.raises(ValueError, match="refusing to unpickle global (posix|nt|os).system"):
        load_batch(path)
    assert not (tmp_path / "pwned").exists()


def test_sources_cifar10_corrupt_and_absent(cifar_dir, tmp_path):
    root, _ = cifar_dir
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(ValueError, match="data_batch_3"):
        CIFAR10(root).splits()
    write_cifar_batch(batch, np.zeros((2, 16, 16, 3), np.uint8), [0, 1])
    with pytest.raises(ValueError, match=r"\(M, 3072\)"):
        CIFAR10(root).splits()
    with pytest.raises(DatasetNotFoundError, match=f"(?s){re.escape(str(tmp_path / 'missing'))}.*cifar-10-python"):
        CIFAR10(tmp_path / "missing")


def test_sources_image_folder_crops_resizes_and_splits(tmp_path):
    write_image_folder(tmp_path / "train" / "cat", [(40, 30), (17, 64)], seed=2)
    write_image_folder(tmp_path / "test" / "cat", [(50, 50)], seed=3)
    Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(tmp_path / "train" / "grey.webp")
    images = ImageFolder(tmp_path, resolution=16)
    splits = images.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "test": 1}
    items = [splits["train"][i] for i in range(3)]
    assert all(x.shape == (16, 16, 3) and x.dtype == np.uint8 for x in items)
    assert images.item_shape == (16, 16, 3)
    with pytest.raises(IndexError):
        splits["test"][1]


def test_sources_image_folder_keeps_the_centre_square_pixel_for_pixel(tmp_path):
    """Landscape, portrait (an odd margin: the extra row goes below) and square PNGs read at their square's side
    are exactly the centre pixels; read at half that side with box filtering they are its 2x2 block means (a crop
    one pixel off would differ by tens of levels on random pixels)."""
    rng = np.random.default_rng(4)
    cases = {"wide.png": (slice(0, 30), slice(5, 35), (30, 40)), "tall.png": (slice(23, 41), slice(0, 18), (64, 18)),
             "square.png": (slice(0, 18), slice(0, 18), (18, 18))}
    for name, (rows, cols, (height, width)) in cases.items():
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        Image.fromarray(pixels).save(folder / name)
        centre = pixels[rows, cols]
        side = centre.shape[0]
        np.testing.assert_array_equal(ImageFolder(folder, resolution=side).splits()["all"][0], centre)
        halved = ImageFolder(folder, resolution=side // 2, resample="box").splits()["all"][0].astype(int)
        block_means = centre.reshape(side // 2, 2, side // 2, 2, 3).mean(axis=(1, 3))
        assert np.abs(halved - block_means).max() <= 1, name  # PIL's fixed-point box filter is within a level


def test_sources_image_folder_without_splits_and_errors(tmp_path):
    # a square image downsized by a whole factor with box filtering gives the block values back
    pattern = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 16, np.ones((4, 4, 3), np.uint8))
    Image.fromarray(pattern).save(tmp_path / "blocks.png")
    folder = ImageFolder(tmp_path, resolution=4, resample="box")
    assert np.array_equal(folder.splits()["all"][0], pattern[::4, ::4])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        ImageFolder(tmp_path, resolution=4).splits()["all"][1]  # files are listed in sorted order
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="empty"):
        ImageFolder(empty, resolution=4)
    with pytest.raises(ValueError, match="resample"):
        ImageFolder(tmp_path, resolution=4, resample="fancy")


def test_sources_lfw_faces():
    faces = LFWFaces()
    images = faces.splits()["all"]
    assert images.shape == (100, 25, 25, 1) and images.dtype == np.uint8
    assert LFWFaces(faces_only=False).splits()["all"].shape == (200, 25, 25, 1)
