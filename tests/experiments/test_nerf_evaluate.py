"""evaluate.py on scene runs: the test views' renders, and FID / KID of several evaluated scenes' renders together
against every view of those scenes (DietNeRF Table 4.1)."""
import json

import numpy as np
import pytest

from conftest import compose_train, run_entry
from evaluation.extractors import get_extractor
from evaluation.image_metrics import fid
from experiments.train import train

pytestmark = pytest.mark.slow  # three entry-point subprocesses


def test_renders_of_evaluated_scenes_are_scored_together_against_every_view(tmp_path, fake_data_root, monkeypatch):
    monkeypatch.setenv("FIELDGEN_DATA_DIR", str(fake_data_root))
    evaluated = []
    for scene in ("eval_0", "encoder_0"):
        train(compose_train(tmp_path / scene, ["experiment=nerf_tiny", f"data.scene={scene}", "test=false",
                                               "trainer.max_steps=2"]))
        evaluated.append(tmp_path / f"eval_{scene}")
        run_entry("evaluate.py", f"ckpt_path={tmp_path / scene / 'run' / 'checkpoints' / 'last.ckpt'}",
                  f"output_dir={evaluated[-1]}", "progress=false",
                  env={"FIELDGEN_DATA_DIR": str(fake_data_root)})
    run_entry("evaluate.py", f"renders=[{evaluated[0]},{evaluated[1]}]", f"output_dir={tmp_path / 'fid'}",
              "extractor=digits-cnn", "kid_subsets=5", env={"FIELDGEN_DATA_DIR": str(fake_data_root)})
    record = json.loads((tmp_path / "fid" / "metrics.json").read_text())
    assert record["num_renders"] == 2 * 2 and record["num_reference"] == 2 * (100 + 2 + 2)  # procedural_scene16
    assert set(record["metrics"]) == {"fid[digits-cnn]", "kid[digits-cnn]", "kid_std[digits-cnn]"}
    from PIL import Image  # the same FID from the extractor's features of the same images, computed here

    renders = np.stack([np.asarray(Image.open(p).convert("RGB")) for d in evaluated
                        for p in sorted((d / "renders").glob("*.png"))])
    scenes = [fake_data_root / "procedural" / f"{scene}_16" for scene in ("eval_0", "encoder_0")]
    reference = np.stack([np.asarray(Image.open(p).convert("RGBA")) for folder in scenes for split in
                          ("train", "val", "test") for p in sorted((folder / split).glob("r_*[0-9].png"),
                                                                   key=lambda p: int(p.stem[2:]))])
    alpha = reference[..., 3:] / 255
    reference = np.rint(reference[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    extractor = get_extractor("digits-cnn")
    assert record["metrics"]["fid[digits-cnn]"] == pytest.approx(
        fid(extractor.features(reference), extractor.features(renders)), rel=1e-3, abs=0.05)
    with pytest.raises(AssertionError, match="no evaluated scene run"):
        run_entry("evaluate.py", f"renders=[{tmp_path / 'fid'}]", f"output_dir={tmp_path / 'bad'}")
