"""A benchmark record as benchmark.json, benchmark.md (tables) and, for a numeric sweep, benchmark.png."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from benchmarks.measure import PHASES
from benchmarks.suite import MEMORY
from evaluation.report import markdown_table


def _table(rows: Sequence[dict], columns: dict[str, Callable[[dict], object]]) -> str:
    return markdown_table([{name: value(row) for name, value in columns.items()} for row in rows], list(columns))


def _columns(record: dict) -> dict[str, Callable[[dict], object]]:
    memory = record["memory"]
    columns = {"model": lambda r: r["model"], "params (M)": lambda r: round(r["params"] / 1e6, 2),
               "precision": lambda r: r["precision"]}
    if record["sweep"]:
        columns[record["sweep"]] = lambda r: r[record["sweep"]]
    columns.update({
        "points": lambda r: r["points"],
        "train fields/s": lambda r: round(r["train_items_per_s"], 2),
        "train step (ms)": lambda r: round(r["train_ms"], 1),
        f"train peak (MiB, {memory})": lambda r: round(r["train_peak_mib"]),
        "sample calls/step": lambda r: r["sample_calls"],
        "sample step (ms)": lambda r: round(r["sample_ms"], 1),
        f"sample peak (MiB, {memory})": lambda r: round(r["sample_peak_mib"]),
    })
    if "train_rays_per_s" in record["rows"][0]:  # a rays domain: the MLPs' throughput against the matmul peak
        columns.update({
            "train rays/s": lambda r: round(r["train_rays_per_s"]),
            "render rays/s": lambda r: round(r["sample_rays_per_s"]),
            "train MLP GFLOP/s (share of peak)": lambda r: f"{r['train_linear_gflops']:.1f} "
                                                           f"({r['train_peak_share']:.0%})",
            "render MLP GFLOP/s (share of peak)": lambda r: f"{r['sample_linear_gflops']:.1f} "
                                                            f"({r['sample_peak_share']:.0%})",
        })
    return columns


def plot_step_times(record: dict, path: Path) -> None:
    """Log-log step time against the fitted axis, one line per model / precision, train and sample side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), tight_layout=True)
    FigureCanvasAgg(figure)
    against = record["slopes_against"]
    for axis, phase in zip(figure.subplots(1, 2), PHASES):
        for slope in record["slopes"]:
            runs = sorted((r for r in record["rows"] if (r["model"], r["precision"]) == (slope["model"],
                                                                                        slope["precision"])),
                          key=lambda r: r[against])
            label = (f"{slope['model']} {slope['precision']} (slope {slope[phase]:.2f}; "
                     f"{slope[f'{phase}, 2 largest']:.2f} over the 2 largest)")
            axis.loglog([r[against] for r in runs], [r[f"{phase}_ms"] for r in runs], "o-", label=label)
        batch = record["batch_size" if phase == "train" else "sample_batch_size"]
        axis.set(xlabel=against, ylabel=f"{phase} step (ms)", title=f"{record['experiment']}: {phase} step, "
                                                                    f"batch {batch}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    figure.savefig(path, dpi=120)


def render_markdown(record: dict) -> str:
    data = "synthetic items of the data's shape (data absent)" if record["synthetic_data"] else "the DataModule's"
    lines = [f"# Benchmark: {record['experiment']} (method {record['method']})", "",
             f"- command: `{record.get('command', '')}`",
             f"- device: {record['device']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
             "- load average (1, 5, 15 min): start " + " ".join(f"{v:.2f}" for v in record["load_average_start"])
             + ", end " + " ".join(f"{v:.2f}" for v in record["load_average_end"]),
             f"- time: median of {record['repeats']} steps after {record['warmup']} warm-up steps",
             f"- train: compute_losses + backward + optimizer step on batches of {record['batch_size']} fields "
             f"({data} training batches)",
             f"- sample: the network calls of one sampling step on {record['sample_batch_size']} fields, replayed "
             f"on the inputs `sample` gave them",
             f"- peak memory: {MEMORY[record['memory']]}"]
    lines.append("- matmul peak (measured, square products): " + ", ".join(
        f"{precision} {gflops:.1f} GFLOP/s" for precision, gflops in record["matmul_peak_gflops"].items())
        + "; MLP GFLOP/s: the linear layers' 2 in x out FLOPs per point (x3 training) over the step time")
    lines += [f"- skipped: {', '.join(record['skipped'])}"] if record["skipped"] else []
    lines += ["", _table(record["rows"], _columns(record))]
    if record["slopes"]:
        columns = {"model": lambda s: s["model"], "precision": lambda s: s["precision"]}
        columns.update({name: (lambda s, name=name: round(s[name], 2)) for name in record["slopes"][0]
                        if name not in columns})
        lines += [f"## Fitted slope of log(step time) vs log({record['slopes_against']})", "",
                  _table(record["slopes"], columns), "![step times](benchmark.png)", ""]
    return "\n".join(lines)


def write_report(record: dict, output_dir: Path) -> Path:
    """output_dir/benchmark.json (the record), benchmark.md and, when slopes were fitted, benchmark.png."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    if record["slopes"]:
        plot_step_times(record, output_dir / "benchmark.png")
    path = output_dir / "benchmark.md"
    path.write_text(render_markdown(record))
    return path
