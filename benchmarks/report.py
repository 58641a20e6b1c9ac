"""A benchmark record as benchmark.json, benchmark.md (tables) and, for a numeric sweep, benchmark.png."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks.measure import PHASES
from benchmarks.suite import MEMORY
from evaluation.report import markdown_table


def _table(rows: Sequence[dict], columns: dict[str, Callable[[dict], object]]) -> str:
    return markdown_table([{name: value(row) for name, value in columns.items()} for row in rows], list(columns))


def _columns(record: dict) -> dict[str, Callable[[dict], object]]:
    memory, phases = record["memory"], record.get("phases", PHASES)
    columns = {"model": lambda r: r["model"], "params (M)": lambda r: round(r["params"] / 1e6, 2),
               "precision": lambda r: r["precision"]}
    if record["sweep"]:
        columns[record["sweep"]] = lambda r: r[record["sweep"]]
    columns["points"] = lambda r: r["points"]
    if "train" in phases:
        columns.update({
            "train fields/s": lambda r: round(r["train_items_per_s"], 2),
            "train step (ms)": lambda r: round(r["train_ms"], 1),
            f"train peak (MiB, {memory})": lambda r: round(r["train_peak_mib"]),
        })
    if "sample" in phases:
        columns.update({
            "sample calls/step": lambda r: r["sample_calls"],
            "sample step (ms)": lambda r: round(r["sample_ms"], 1),
            f"sample peak (MiB, {memory})": lambda r: round(r["sample_peak_mib"]),
        })
    rays = {"train": "train", "sample": "render"}
    for phase in phases:
        if f"{phase}_rays_per_s" in record["rows"][0]:  # a rays domain: the MLPs' throughput against the matmul peak
            columns[f"{rays[phase]} rays/s"] = lambda r, phase=phase: round(r[f"{phase}_rays_per_s"])
    for phase in phases:
        if f"{phase}_rays_per_s" in record["rows"][0]:
            columns[f"{rays[phase]} MLP GFLOP/s (share of peak)"] = (
                lambda r, phase=phase: f"{r[f'{phase}_linear_gflops']:.1f} ({r[f'{phase}_peak_share']:.0%})")
    return columns


def plot_step_times(record: dict, path: Path) -> None:
    """Log-log step time against the fitted axis, one line per model / precision, train and sample side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), tight_layout=True)
    FigureCanvasAgg(figure)
    against = record["slopes_against"]
    phases = record.get("phases", PHASES)
    for axis, phase in zip(np.atleast_1d(figure.subplots(1, len(phases))), phases):
        for slope in record["slopes"]:
            runs = sorted((r for r in record["rows"] if (r["model"], r["precision"]) == (slope["model"],
                                                                                        slope["precision"])),
                          key=lambda r: r[against])
            label = (f"{slope['model']} {slope['precision']} (slope {slope[phase]:.2f}; "
                     f"{slope[f'{phase}, 2 largest']:.2f} over the 2 largest)")
            axis.loglog([r[against] for r in runs], [r[f"{phase}_ms"] for r in runs], "o-", label=label)
        if "operator" in record:
            title = f"operator {record['operator']}: forward + backward"
        else:
            batch = record["batch_size" if phase == "train" else "sample_batch_size"]
            title = f"{record['experiment']}: {phase} step, batch {batch}"
        axis.set(xlabel=against, ylabel=f"{phase} step (ms)", title=title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    figure.savefig(path, dpi=120)


def _header(record: dict) -> list[str]:
    return [f"- command: `{record.get('command', '')}`",
            f"- device: {record['device']}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
            "- load average (1, 5, 15 min): start " + " ".join(f"{v:.2f}" for v in record["load_average_start"])
            + ", end " + " ".join(f"{v:.2f}" for v in record["load_average_end"]),
            f"- time: median of {record['repeats']} steps after {record['warmup']} warm-up steps"]


def _slopes(record: dict) -> list[str]:
    if not record["slopes"]:
        return []
    columns = {"model": lambda s: s["model"], "precision": lambda s: s["precision"]}
    columns.update({name: (lambda s, name=name: round(s[name], 2)) for name in record["slopes"][0]
                    if name not in columns})
    return [f"## Fitted slope of log(step time) vs log({record['slopes_against']})", "",
            _table(record["slopes"], columns), "![step times](benchmark.png)", ""]


def render_operator_markdown(record: dict) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in record["settings"].items() if k != "variants")
    columns = {"variant": lambda r: r["model"], "precision": lambda r: r["precision"]}
    if record["sweep"]:
        columns[record["sweep"]] = lambda r: r[record["sweep"]]
    columns.update({"points": lambda r: r["points"],
                    "forward + backward (ms)": lambda r: round(r["train_ms"], 2),
                    f"peak (MiB, {record['memory']})": lambda r: round(r["train_peak_mib"], 1)})
    lines = [f"# Benchmark: operator {record['operator']}", "", *_header(record),
             f"- operator: {' '.join(record['description'].split())} ({settings})",
             "- step: forward, then the backward of the output's sum into the inputs and weights (synthetic inputs "
             "built before the steps)",
             f"- peak memory: {MEMORY[record['memory']]}", "", _table(record["rows"], columns), ""]
    return "\n".join(lines + _slopes(record))


def render_markdown(record: dict) -> str:
    if "operator" in record:
        return render_operator_markdown(record)
    data = "synthetic items of the data's shape (data absent)" if record["synthetic_data"] else "the DataModule's"
    phases = record.get("phases", PHASES)
    lines = [f"# Benchmark: {record['experiment']} (method {record['method']})", "", *_header(record)]
    lines += [f"- train: compute_losses + backward + optimizer step on batches of {record['batch_size']} fields "
              f"({data} training batches)"] if "train" in phases else []
    lines += [f"- sample: the network calls of one sampling step on {record['sample_batch_size']} fields, replayed "
              f"on the inputs `sample` gave them"] if "sample" in phases else []
    lines.append(f"- peak memory: {MEMORY[record['memory']]}")
    lines.append("- matmul peak (measured, square products): " + ", ".join(
        f"{precision} {gflops:.1f} GFLOP/s" for precision, gflops in record["matmul_peak_gflops"].items())
        + "; MLP GFLOP/s: the linear layers' 2 in x out FLOPs per point (x3 training) over the step time")
    lines += [f"- skipped: {', '.join(record['skipped'])}"] if record["skipped"] else []
    lines += ["", _table(record["rows"], _columns(record))]
    return "\n".join(lines + _slopes(record))


def write_report(record: dict, output_dir: Path) -> Path:
    """output_dir/benchmark.json (the record), benchmark.md and, when slopes were fitted, benchmark.png."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    if record["slopes"]:
        plot_step_times(record, output_dir / "benchmark.png")
    path = output_dir / "benchmark.md"
    path.write_text(render_markdown(record))
    return path
