"""Compose run configs in-process (Hydra's compose API) and run entry points as subprocesses."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def compose_train(tmp_path: Path, overrides: list[str]):
    """The composed train config, with every path under tmp_path, ready for experiments.train.train()."""
    import experiments.train  # noqa: F401  (registers the config resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def compose_command(config_name: str, overrides: list[str]):
    """The composed config of sample.py / evaluate.py with its Hydra config set, as the entry point sees it."""
    import experiments.train  # noqa: F401  (registers the config resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path, fake_data_root, monkeypatch):
    """Compose with every dataset present as a tiny fake in its real format (`fake_data_root`)."""
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))
    return lambda *overrides: compose_train(tmp_path, list(overrides))


def run_entry(script: str, *args: str, timeout: float = 600, check: bool = True, cwd: Path = ROOT,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run experiments/<script> with args in a subprocess from `cwd` (extra `env` variables); output captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc
