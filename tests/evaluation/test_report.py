"""metrics.json / metrics.md and run comparisons (table + figure)."""
import json

import numpy as np
import pytest
from PIL import Image

from evaluation.report import SCHEMA, compare_runs, markdown_table, metric_panels, read_metrics, write_metrics


def _run(path, dataset, metrics, samples="npz"):
    write_metrics(metrics, path, dataset=dataset, checkpoint="last.ckpt")
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    if samples == "npz":
        np.savez(path / "samples.npz", images=images, coords=np.zeros((10, 64, 2)), values=np.zeros((10, 64, 1)))
    elif samples == "png":
        Image.fromarray(np.concatenate(list(images[..., 0]), axis=1)).save(path / "samples.png")
    return path


def test_write_metrics_schema_and_markdown(tmp_path):
    rows = [{"reverse_time": 1000, "rate_bpd": 1.77, "distortion_rmse": 0.95}]
    path = write_metrics({"fid[digits-cnn]": 3.5, "bpd": float("nan")}, tmp_path / "run", dataset="digits",
                         tables={"rate_distortion": rows}, checkpoint="last.ckpt", num_samples=100)
    record = json.loads(path.read_text())
    assert record["schema"] == SCHEMA and record["dataset"] == "digits" and record["num_samples"] == 100
    assert record["metrics"] == {"fid[digits-cnn]": 3.5, "bpd": None}  # NaN is written as null
    assert record["tables"]["rate_distortion"] == rows and "created" in record
    markdown = (tmp_path / "run" / "metrics.md").read_text()
    assert "| fid[digits-cnn] | 3.5 |" in markdown and "| 1000 | 1.77 | 0.95 |" in markdown
    assert read_metrics(tmp_path / "run")["metrics"]["fid[digits-cnn]"] == 3.5
    with pytest.raises(ValueError, match="dataset name"):
        write_metrics({}, tmp_path / "other", dataset="")


def test_markdown_table_layout():
    assert markdown_table([{"a": 1, "b": 0.5}, {"a": 2}]) == "| a | b |\n|---|---|\n| 1 | 0.5 |\n| 2 |  |\n"


def test_compare_runs_writes_a_table_and_a_figure(tmp_path):
    runs = [_run(tmp_path / "ddpm", "digits", {"fid[digits-cnn]": 3.0, "kid[digits-cnn]": 0.1}),
            _run(tmp_path / "dpf", "digits", {"fid[digits-cnn]": 5.0}, samples="png"),
            _run(tmp_path / "none", "digits", {"fid[digits-cnn]": 9.0}, samples=None)]
    out = compare_runs(runs, tmp_path / "cmp")
    table = out["table"].read_text()
    assert "| run | fid[digits-cnn] | kid[digits-cnn] |" in table and "| dpf | 5 |  |" in table
    with Image.open(out["figure"]) as figure:
        assert figure.format == "PNG" and figure.size[0] > 400 and figure.size[1] > 300


# what `make demo`'s evaluation writes: 14 metrics, of which 3 are spreads and 1 a count
DEMO_METRICS = ["test/loss", "test/bpd", "test/bpd_sem", "test/num_samples", "test/prior_bpd", "test/distortion_bpd",
                "test/rate_bpd", "is[digits-cnn]", "is_std[digits-cnn]", "fid[digits-cnn]", "kid[digits-cnn]",
                "kid_std[digits-cnn]", "precision[digits-cnn]", "recall[digits-cnn]"]


def test_spreads_are_error_bars_and_counts_stay_in_the_table():
    assert metric_panels(DEMO_METRICS) == [
        ("test/loss", None), ("test/bpd", "test/bpd_sem"), ("test/prior_bpd", None), ("test/distortion_bpd", None),
        ("test/rate_bpd", None), ("is[digits-cnn]", "is_std[digits-cnn]"), ("fid[digits-cnn]", None),
        ("kid[digits-cnn]", "kid_std[digits-cnn]"), ("precision[digits-cnn]", None), ("recall[digits-cnn]", None)]
    assert metric_panels(["kid_std[other]", "kid[digits-cnn]"]) == [("kid_std[other]", None), ("kid[digits-cnn]", None)]


def test_a_comparison_of_many_metrics_stays_readable(tmp_path):
    values = {name: float(i + 1) for i, name in enumerate(DEMO_METRICS)}
    runs = [_run(tmp_path / name, "digits", values) for name in ("a", "b")]
    out = compare_runs(runs, tmp_path / "cmp")
    with Image.open(out["figure"]) as figure:
        assert figure.size[0] <= 1300  # 4 panels to a row, not 14 side by side (4200 px before)
    assert "| run | " + " | ".join(DEMO_METRICS) + " |" in out["table"].read_text()  # the table keeps every metric


def test_compare_runs_refuses_mixed_datasets_and_non_runs(tmp_path):
    runs = [_run(tmp_path / "a", "digits", {"fid": 1.0}), _run(tmp_path / "b", "fashion_mnist", {"fid": 1.0})]
    with pytest.raises(ValueError, match="different datasets \\(a: digits, b: fashion_mnist\\)"):
        compare_runs(runs, tmp_path / "cmp")
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        compare_runs([tmp_path / "missing"], tmp_path / "cmp")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="missing \\['dataset'\\]"):
        read_metrics(tmp_path / "bad")
