"""Shared fixtures; every test runs offline and writes only under tmp."""
import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Caches (feature networks, reference statistics) go to a per-session tmp dir, never to the real home."""
    cache = tmp_path_factory.getbasetemp() / "fieldgen-cache"
    monkeypatch.setenv("FIELDGEN_CACHE_DIR", str(cache))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.getbasetemp() / "wandb"))


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory):
    """A data root holding tiny fakes of every on-disk dataset of conf/data (tests/fake_datasets.py), written
    once per session."""
    from fake_datasets import write_fake_datasets  # on use: most sessions never need trimesh, scipy, PIL

    return write_fake_datasets(tmp_path_factory.mktemp("fake-data"))
