"""Speed and memory: `python experiments/benchmark.py suite=ddpm|dpf [device=cpu] [precisions=[fp32]]`.

ddpm: U-Net train-step throughput, sampling-step time and peak memory; dpf: PerceiverIO cost against points and
latents with its log-log slope; both beside diffusers / transformers where they import (conf/benchmark.yaml).
Writes output_dir/benchmark.md, benchmark.json (and benchmark.png for dpf) and prints the tables.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lightning_modules.benchmarking import run_suite, write_report
from lightning_modules.runtime import resolve_device


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> Path:
    record = run_suite(cfg.suite, OmegaConf.to_container(cfg[cfg.suite], resolve=True), resolve_device(cfg.device),
                       list(cfg.precisions), cfg.warmup, cfg.repeats, cfg.peers, cfg.channels_last, cfg.compile,
                       cfg.isolate_memory)
    overrides = HydraConfig.get().overrides.task
    record["command"] = " ".join(["python experiments/benchmark.py", *map(shlex.quote, overrides)])
    path = write_report(record, Path(cfg.output_dir))
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
