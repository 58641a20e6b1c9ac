"""Evaluation reports: a run's metrics.json + metrics.md, and side-by-side comparisons of runs.

A run directory (what `experiments/evaluate.py` writes) holds `metrics.json`, `metrics.md` and its samples
(`samples.npz` and/or `samples.png`). metrics.json schema ("fieldgen.metrics/1"):

    {
      "schema": "fieldgen.metrics/1",
      "dataset": "digits",                      # required: runs are only compared on the same dataset
      "metrics": {"fid[digits-cnn]": 3.2, ...}, # required: name -> number (null for NaN); image metrics carry
                                                #   their extractor in brackets
      "tables": {"rate_distortion": [{...}]},   # optional: named lists of rows (same keys in every row)
      "created": "2026-11-22T10:00:00+00:00",
      ...                                       # optional run info: checkpoint, method, num_samples, split, ...
    }

samples.npz holds "images" uint8 (N, H, W, C) in 0..255 for grid domains, and "coords" / "values" for every field.
A metric named NAME_std or NAME_sem (bracketed extractor kept: `is_std[digits-cnn]`) is the spread of NAME, and one
whose last path part starts with `num_` (`test/num_samples`) is a count: comparisons draw them as error bars and
in the table only, not as panels of their own.
"""
from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

SCHEMA = "fieldgen.metrics/1"
PathLike = Union[str, Path]
PANELS_PER_ROW = 4  # keeps comparison.png about 1200 px wide however many metrics a run has
SPREAD = re.compile(r"^(?P<base>.*)_(?P<kind>std|sem)(?P<extractor>\[[^\]]*\])?$")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """A GitHub markdown table of `rows` (dicts); columns default to the keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _json_number(value: Any) -> Any:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def write_metrics(metrics: Mapping[str, float], output_dir: PathLike, dataset: str,
                  tables: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None, **info: Any) -> Path:
    """Write output_dir/metrics.json (schema above) and output_dir/metrics.md; returns the json path."""
    if not dataset:
        raise ValueError("write_metrics needs the dataset name: comparisons refuse runs on different datasets")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"schema": SCHEMA, "dataset": dataset, **info,
              "metrics": {name: _json_number(value) for name, value in metrics.items()},
              "tables": {name: [dict(row) for row in rows] for name, rows in (tables or {}).items()},
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    lines = [f"# Evaluation: {dataset}\n"]
    lines += [f"- {key}: {value}" for key, value in info.items()] + [""]
    lines.append(markdown_table([{"metric": k, "value": v} for k, v in record["metrics"].items()]))
    for name, rows in record["tables"].items():
        lines += [f"\n## {name}\n", markdown_table(rows)]
    (output_dir / "metrics.md").write_text("\n".join(lines))
    return path


def read_metrics(run_dir: PathLike) -> dict:
    """A run's metrics.json, validated against the schema."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a run directory is what experiments/evaluate.py writes "
                                "(metrics.json + samples)")
    record = json.loads(path.read_text())
    missing = [key for key in ("dataset", "metrics") if key not in record]
    if missing or not isinstance(record.get("metrics"), dict):
        raise ValueError(f"{path} does not follow {SCHEMA}: missing {missing or ['metrics (a dict)']}")
    return record


def sample_strip(run_dir: PathLike, count: int = 8) -> Optional[np.ndarray]:
    """The first `count` samples of a run side by side as one uint8 (H, W, C) image, from samples.npz's
    "images" or else samples.png; None when the run has neither."""
    run_dir = Path(run_dir)
    npz = run_dir / "samples.npz"
    if npz.is_file():
        with np.load(npz) as data:
            if "images" in data:
                images = data["images"][:count]
                if images.ndim == 3:
                    images = images[..., None]
                return np.concatenate(list(images), axis=1)
    png = run_dir / "samples.png"
    if png.is_file():
        return np.asarray(Image.open(png).convert("RGB"))
    return None


def _plotted(value: Optional[float]) -> float:
    return np.nan if value is None else value  # metrics.json writes NaN as null


def metric_panels(metric_names: Sequence[str]) -> list[tuple[str, Optional[str]]]:
    """(metric, its spread's name or None) for each metric a comparison plots: spreads (NAME_std, NAME_sem) become
    error bars of NAME (a panel of their own when NAME is absent) and counts (num_*) are left to the table."""
    names = list(metric_names)
    spread_of = {}
    for name in names:
        match = SPREAD.match(name)
        if match and match["base"] + (match["extractor"] or "") in names:
            spread_of[match["base"] + (match["extractor"] or "")] = name
    return [(name, spread_of.get(name)) for name in names
            if name not in spread_of.values() and not name.rsplit("/", 1)[-1].startswith("num_")]


def compare_runs(run_dirs: Sequence[PathLike], output_dir: PathLike, names: Optional[Sequence[str]] = None,
                 samples_per_run: int = 8) -> dict[str, Path]:
    """comparison.md (a table, one row per run, every metric) and comparison.png (a bar chart per metric panel,
    PANELS_PER_ROW to a row, then a row of samples per run) of runs evaluated on the same dataset."""
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    records = [read_metrics(d) for d in run_dirs]
    names = list(names) if names is not None else [Path(d).resolve().name for d in run_dirs]
    datasets = {r["dataset"] for r in records}
    if len(datasets) > 1:
        listing = ", ".join(f"{n}: {r['dataset']}" for n, r in zip(names, records))
        raise ValueError(f"runs are on different datasets ({listing}); compare runs of one dataset only")
    metric_names = list(dict.fromkeys(k for r in records for k in r["metrics"]))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"run": n, **r["metrics"]} for n, r in zip(names, records)]
    table = output_dir / "comparison.md"
    table.write_text(f"# Comparison on {datasets.pop()}\n\n" + markdown_table(rows, ["run", *metric_names]))

    strips = [sample_strip(d, samples_per_run) for d in run_dirs]
    panels = metric_panels(metric_names)
    columns = min(PANELS_PER_ROW, max(1, len(panels)))
    metric_rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(3.0 * columns, 2.6 * metric_rows + 1.2 * len(run_dirs)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(metric_rows + len(run_dirs), columns,
                               height_ratios=[2.0] * metric_rows + [1.0] * len(run_dirs))
    for i, (metric, spread) in enumerate(panels):
        axis = figure.add_subplot(grid[i // columns, i % columns])
        values = [_plotted(r["metrics"].get(metric)) for r in records]
        errors = None if spread is None else [_plotted(r["metrics"].get(spread)) for r in records]
        axis.bar(range(len(names)), values, yerr=errors, capsize=3, color=[f"C{j}" for j in range(len(names))])
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(metric if spread is None else f"{metric} ± {SPREAD.match(spread)['kind']}", fontsize=9)
    for j, (name, strip) in enumerate(zip(names, strips)):
        axis = figure.add_subplot(grid[metric_rows + j, :])
        axis.set_axis_off()
        axis.set_title(name, fontsize=9, loc="left")
        if strip is None:
            axis.text(0.5, 0.5, "no samples.npz images or samples.png", ha="center", va="center")
        else:
            axis.imshow(strip.squeeze(-1) if strip.shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=255,
                        interpolation="nearest")
    image = output_dir / "comparison.png"
    figure.savefig(image, dpi=100)
    return {"table": table, "figure": image}


def save_renders(output_dir: PathLike, renders: Sequence[Mapping[str, Any]],
                 names: Optional[Sequence[str]] = None) -> None:
    """Each view's render as output_dir/renders/<name>.png, and its depth and accumulation maps (when rendered) as
    output_dir/depth/<name>.png (normalised to the view's range) and output_dir/acc/<name>.png."""
    names = list(names) if names is not None else [f"view_{i:03d}" for i in range(len(renders))]
    for name, render in zip(names, renders):
        maps = {"renders": render["rgb"].numpy()}
        if "depth" in render:
            depth = render["depth"].numpy()
            maps["depth"] = (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-12)
        if "acc" in render:
            maps["acc"] = render["acc"].numpy()
        for folder, image in maps.items():
            path = Path(output_dir) / folder / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
