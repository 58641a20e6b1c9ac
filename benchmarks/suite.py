"""Every case of a benchmark: the experiment's module (and its peers) x precision x sweep value x phase."""
from __future__ import annotations

import copy
import logging
import os
import platform
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmarks.measure import OURS, PHASES, PRECISIONS, Case, matmul_peak_gflops, run_case
from benchmarks.peers import PEERS
from benchmarks.runs import build_run

log = logging.getLogger(__name__)

# what the peak memory columns hold, by their short name in the column headers
MEMORY = {
    "CUDA max allocated": "torch.cuda.max_memory_allocated (weights, optimizer state and activations)",
    "RSS rise": "rise of the resident set's peak (Linux VmHWM or sampled VmRSS, else ru_maxrss) over its size before the first step "
                "(module, data and batches built: train adds gradients, optimizer state and activations), each case "
                "in a fresh spawn process",
    "RSS rise, in-process": "rise of the resident set's peak (Linux VmHWM or sampled VmRSS, else ru_maxrss) over its size before the "
                            "first step, all cases in one process: memory an earlier case freed is reused, and "
                            "without /proc the rise is a lower bound once an earlier case peaked higher",
}


def check_options(options: DictConfig, device: torch.device) -> None:
    if not options.phases or set(options.phases) - set(PHASES):
        raise ValueError(f"benchmark.phases must be a non-empty subset of {list(PHASES)}, got {list(options.phases)}")
    unknown = sorted(set(options.precisions) - set(PRECISIONS))
    if unknown or not options.precisions:
        raise ValueError(f"benchmark.precisions must be a non-empty subset of {list(PRECISIONS)}, "
                         f"got {list(options.precisions)}")
    if options.warmup < 0 or options.repeats < 1:
        raise ValueError(f"need benchmark.warmup >= 0 and benchmark.repeats >= 1 timed steps, got "
                         f"warmup={options.warmup}, repeats={options.repeats}")
    if options.batches < 1 or options.sample_steps < 1:
        raise ValueError(f"need benchmark.batches >= 1 and benchmark.sample_steps >= 1, got "
                         f"batches={options.batches}, sample_steps={options.sample_steps}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("benchmark.device=cuda but torch sees no GPU; use benchmark.device=cpu or auto")


def sweep_configs(cfg: DictConfig) -> list[tuple[Any, dict]]:
    """(value, resolved train config) per value of benchmark.sweep (one (None, config) without a sweep).

    sweep.key names any config key (a leading + adds one the config lacks); a list of keys takes a list of
    values per point, set together."""
    sweep = cfg.benchmark.sweep
    base = copy.deepcopy(cfg)
    with open_dict(base):
        for node in ("benchmark", "hydra"):
            base.pop(node, None)
    if sweep.key is None:
        return [(None, OmegaConf.to_container(base, resolve=True))]
    keys = [sweep.key] if isinstance(sweep.key, str) else list(sweep.key)
    if not sweep["values"]:
        raise ValueError(f"benchmark.sweep.key={sweep.key} needs benchmark.sweep.values=[...], got none")
    points = []
    for value in OmegaConf.to_container(sweep["values"]):
        values = [value] if isinstance(sweep.key, str) else value
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError(f"benchmark.sweep.values: {value} does not give one value per key of {keys}")
        point = copy.deepcopy(base)
        for key, item in zip(keys, values):
            if not key.startswith("+") and OmegaConf.select(point, key, default=KeyError) is KeyError:
                raise ValueError(f"benchmark.sweep.key: {key} is not a key of the experiment's config; check its "
                                 f"spelling, or write +{key} to add it")
            OmegaConf.update(point, key.lstrip("+"), item, merge=False, force_add=True)
        points.append((value, OmegaConf.to_container(point, resolve=True)))
    return points


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return (f"cpu: {names[0] if names else platform.processor() or platform.machine()} "
            f"({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x: the exponent k of y ~ c x^k."""
    if len(x) != len(y) or len(set(x)) < 2:
        raise ValueError(f"a log-log slope needs at least two distinct x values, got x={list(x)}")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def fitted_slopes(rows: Sequence[dict], against: str, phases: Sequence[str] = PHASES) -> list[dict]:
    """Per model and precision, the log-log slope of each phase's step time against `against`: over the whole
    sweep and over its two largest values (where the work that grows outweighs the fixed work)."""
    slopes = []
    for model, precision in dict.fromkeys((row["model"], row["precision"]) for row in rows):
        runs = sorted((r for r in rows if (r["model"], r["precision"]) == (model, precision)),
                      key=lambda r: r[against])
        entry = {"model": model, "precision": precision}
        for phase in phases:
            for name, part in ((f"{phase}", runs), (f"{phase}, 2 largest", runs[-2:])):
                entry[name] = loglog_slope([r[against] for r in part], [r[f"{phase}_ms"] for r in part])
        slopes.append(entry)
    return slopes


def slope_axis(rows: Sequence[dict], key: Optional[str]) -> Optional[str]:
    """What step times are fitted against: the points per field when the sweep changes them, else the swept
    value when it is a number; None when there is nothing to fit."""
    if key is None:
        return None
    if len({row["points"] for row in rows}) > 1:
        return "points"
    numeric = all(isinstance(row[key], (int, float)) and not isinstance(row[key], bool) and row[key] > 0
                  for row in rows)
    return key if numeric and len({row[key] for row in rows}) > 1 else None


def run_benchmark(cfg: DictConfig, experiment: Optional[str], operator: Optional[str] = None) -> dict:
    """Measure every case of the composed benchmark config (conf/benchmark.yaml over the train config, or the
    `operator` case of conf/operator/ when one is selected); returns the record that report.write_report writes."""
    options = cfg.benchmark
    device = torch.device("cuda" if options.device == "auto" and torch.cuda.is_available() else
                          "cpu" if options.device == "auto" else options.device)
    check_options(options, device)
    points = sweep_configs(cfg)
    shape = tuple(options.synthetic_item_shape) if options.synthetic_item_shape else None
    isolate = options.isolate_memory and device.type == "cpu"
    sweep_key = None if options.sweep.key is None else str(options.sweep.key if isinstance(options.sweep.key, str)
                                                           else ",".join(options.sweep.key))
    record = {"experiment": experiment, "device": device_name(device), "versions": {"torch": torch.__version__},
              "skipped": [], "warmup": options.warmup, "repeats": options.repeats,
              "memory": "CUDA max allocated" if device.type == "cuda" else "RSS rise" if isolate
              else "RSS rise, in-process", "sweep": sweep_key, "load_average_start": os.getloadavg(), "rows": []}
    if operator:
        builder = instantiate(points[0][1]["operator"], _convert_="all")  # config errors surface here
        models, labels, phases = builder.variants, {}, ("train",)
        record.update(operator=operator, description=type(builder).__doc__.split("\n\n")[0],
                      settings={k: v for k, v in points[0][1]["operator"].items() if not k.startswith("_")},
                      synthetic_data=True)
    else:
        _, probe, synthetic = build_run(points[0][1], 1, shape)  # config errors surface here, before any timing
        models, phases = [OURS], [phase for phase in PHASES if phase in options.phases]
        for name, peer in PEERS.items():
            if not peer.applies_to(probe):
                continue
            version = peer.version() if options.peers else None
            if version:
                models.append(name)
                record["versions"][peer.package] = version
            else:
                record["skipped"].append(f"{name} ({'benchmark.peers=false' if not options.peers else peer.package + ' does not import'})")
        record.update(method=probe.method_name, synthetic_data=synthetic, batch_size=points[0][1]["data"]["batch_size"],
                      sample_batch_size=options.sample_batch_size or points[0][1]["data"]["batch_size"],
                      sample_steps=options.sample_steps,
                      matmul_peak_gflops={precision: matmul_peak_gflops(device, precision, options.matmul_peak_size)
                                          for precision in options.precisions})
        labels = {OURS: f"{OURS} " + " + ".join(type(network).__name__ for network in probe.networks().values())}
        del probe
    record["phases"] = list(phases)
    for model in models:
        for precision in options.precisions:
            for value, config in points:
                row = {"model": labels.get(model, model), "precision": precision,
                       **({sweep_key: value} if sweep_key else {})}
                for phase in phases:
                    case = Case(config, model, precision, phase, str(device), options.warmup, options.repeats,
                                options.batches, options.sample_batch_size or config["data"]["batch_size"],
                                options.sample_steps, shape)
                    result = run_case(case, isolate)
                    row.update(params=result.pop("params"), points=result.pop("points"))
                    row["synthetic_data"] = result.pop("synthetic_data")
                    row.update({f"{phase}_{k}": v for k, v in result.items()})
                    if not operator:
                        row[f"{phase}_peak_share"] = (row[f"{phase}_linear_gflops"]
                                                      / record["matmul_peak_gflops"][precision])
                log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
                record["rows"].append(row)
    record["load_average_end"] = os.getloadavg()
    against = slope_axis(record["rows"], sweep_key)
    record["slopes_against"] = against
    record["slopes"] = fitted_slopes(record["rows"], against, phases) if against else []
    return record
