"""Every pinned experiment resolves to exactly the values pinned in pinned_configs.json.

The config tree composes shared presets (diffusion, sampler, scale overlays, data bases); a refactor of the tree
must not change what any experiment trains. A deliberate change of a default is re-pinned, and shows in the diff:
    python tests/experiments/test_config_pins.py NAME ...   # re-pins the named experiments, keeps every other pin
    python tests/experiments/test_config_pins.py            # re-pins every experiment from the current tree
"""
import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

CONF = Path(__file__).resolve().parents[2] / "conf"
PINS = Path(__file__).with_name("pinned_configs.json")
FIXED_PATHS = ["paths.root_dir=/ROOT", "paths.log_dir=/LOG", "paths.data_dir=/DATA"]


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict) and tree:
        return {key: value for name, sub in tree.items() for key, value in flatten(sub, f"{prefix}{name}.").items()}
    return {prefix[:-1]: tree}


def resolved(experiment: str) -> dict:
    """The experiment's composed train config, resolved with fixed paths, flattened to dotted keys."""
    import experiments.train  # noqa: F401  (registers the config resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *FIXED_PATHS], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = "/OUT"
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("hydra")
    return flatten(values)


PINNED = json.loads(PINS.read_text()) if PINS.exists() else {}


@pytest.mark.parametrize("experiment", sorted(PINNED))
def test_experiment_resolves_to_its_pinned_values(experiment):
    now, pinned = resolved(experiment), PINNED[experiment]
    changed = {key: (pinned.get(key, "<absent>"), now.get(key, "<absent>"))
               for key in sorted(set(now) | set(pinned)) if now.get(key, "<absent>") != pinned.get(key, "<absent>")}
    assert not changed, f"{experiment} resolves differently (pinned, now): {changed}"


if __name__ == "__main__":
    known = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
    experiments = sys.argv[1:] or known
    unknown = sorted(set(experiments) - set(known))
    if unknown:
        sys.exit(f"no experiment {unknown} in {CONF / 'experiment'}; pick from {known}")
    sys.path.insert(0, str(CONF.parent))
    pins = ({} if not sys.argv[1:] else PINNED) | {name: resolved(name) for name in experiments}
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    print(f"pinned {len(experiments)} of {len(pins)} experiments in {PINS}")
