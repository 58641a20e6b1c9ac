"""What a newcomer sees: a short header (the config tree goes to the run dir), where the outputs are at the end,
errors in the run's log file, debug overlays without third-party DEBUG floods, debug=fdr writing no checkpoint."""
import logging
from pathlib import Path

import pytest

from experiments.train import train
from lightning_modules.runtime import reports_errors


def messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "lightning_modules.runtime"]


def test_a_run_prints_a_short_header_and_ends_with_where_its_outputs_are(make_cfg, caplog, capsys):
    cfg = make_cfg("experiment=ddpm_tiny", "test=false")
    with caplog.at_level("INFO", logger="lightning_modules.runtime"):
        train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    lines = messages(caplog)
    assert lines[0] == (f"experiment=ddpm_tiny, method=ddpm, data=digits, trainer=cpu; run dir {run_dir} "
                        "(config tree: config_tree.log)")
    assert "CONFIG" not in capsys.readouterr().out and "method" in (run_dir / "config_tree.log").read_text()
    assert [line.split()[0] for line in lines[-4:]] == ["checkpoint", "samples", "loss", "metrics"]
    assert lines[-4:] == [f"checkpoint {run_dir}/checkpoints/last.ckpt", f"samples    {run_dir}/samples/latest.png",
                          f"loss curve {run_dir}/loss_curve.png", f"metrics    {run_dir}/csv/version_0/metrics.csv"]


def test_debug_fdr_writes_no_checkpoint(make_cfg):
    cfg = make_cfg("experiment=ddpm_tiny", "debug=fdr")
    train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))


def test_debug_overlays_log_fieldgen_at_debug_and_third_parties_at_info(make_cfg):
    logging_cfg = make_cfg("experiment=ddpm_tiny", "debug=limit").hydra.job_logging
    assert logging_cfg.root.level == "INFO"
    assert {name: logger.level for name, logger in logging_cfg.loggers.items()} == {
        name: "DEBUG" for name in ("fieldgen", "lightning_modules", "datamodules", "evaluation", "networks")}


def test_an_error_goes_to_the_log_file_with_its_traceback(tmp_path, make_cfg, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    make_cfg()  # sets the Hydra config (a single run)
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)

    @reports_errors
    def task(cfg):
        raise ValueError("the loss is NaN at step 3")

    try:
        with pytest.raises(SystemExit):
            task(None)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert capsys.readouterr().err.splitlines()[-1] == "Error: the loss is NaN at step 3"
    text = (tmp_path / "train.log").read_text()
    assert "Traceback" in text and "ValueError: the loss is NaN at step 3" in text
