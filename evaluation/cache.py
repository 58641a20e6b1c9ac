"""Verified on-disk cache for evaluation artefacts (feature networks, reference features).

Every cached file `X` has a sidecar `X.json` holding its sha256 and the metadata it was built from; a load checks
both and returns None (with a warning) for anything missing, corrupt or built from other settings, so the caller
rebuilds instead of trusting it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch

log = logging.getLogger(__name__)


def cache_dir(subdir: str = "") -> Path:
    """`$FIELDGEN_CACHE_DIR` (default `~/.cache/fieldgen`) / subdir, created."""
    root = Path(os.environ.get("FIELDGEN_CACHE_DIR") or Path.home() / ".cache" / "fieldgen")
    path = root / subdir
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_verified(obj: Any, path: Path, metadata: dict) -> str:
    """torch.save `obj` to `path` (atomically) plus a sidecar with its sha256 and `metadata`; returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save(obj, partial)
    os.replace(partial, path)  # a crash mid-write leaves the old file or none, never half a file
    sha = sha256_file(path)
    _sidecar(path).write_text(json.dumps({"sha256": sha, "metadata": metadata}, indent=2, sort_keys=True))
    return sha


def load_verified(path: Path, metadata: dict) -> Optional[Any]:
    """The object at `path` if its sha256 and metadata match the sidecar, else None (logging why)."""
    path, sidecar = Path(path), _sidecar(Path(path))
    if not path.exists() or not sidecar.exists():
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, OSError) as err:
        log.warning("cache sidecar %s is unreadable (%s); rebuilding", sidecar, err)
        return None
    expected = json.loads(json.dumps(metadata, sort_keys=True))  # compare in JSON form (tuples become lists)
    if record.get("metadata") != expected:
        log.warning("cache %s was built with %s, now %s; rebuilding", path, record.get("metadata"), expected)
        return None
    if record.get("sha256") != sha256_file(path):
        log.warning("cache %s fails its sha256 check (corrupt or edited); rebuilding", path)
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file matching its hash can still be unreadable by another torch version
        log.warning("cache %s cannot be loaded (%s); rebuilding", path, err)
        return None
