"""Speed and memory of an experiment's LitModule: `python experiments/benchmark.py experiment=NAME [overrides]`.

Any train.py override applies (data.batch_size=8, method.net.num_latents=256); benchmark.* sets the measurement
and benchmark.sweep.key / .values sweep any config key (conf/benchmark.yaml);
`operator=NAME` times one operator's variants on synthetic inputs instead (conf/operator/, benchmarks/operators.py). Writes benchmark.output_dir/
benchmark.md, benchmark.json (and benchmark.png for a numeric sweep) and prints the tables.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from benchmarks.report import write_report
from benchmarks.suite import run_benchmark
from lightning_modules.runtime import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> Path:
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    record = run_benchmark(cfg, choices.get("experiment"), choices.get("operator"))
    record["command"] = " ".join(["python experiments/benchmark.py", *map(shlex.quote, hydra_cfg.overrides.task)])
    path = write_report(record, Path(cfg.benchmark.output_dir))
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
