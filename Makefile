# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= logs/train/runs/demo
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-fast

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) experiments/train.py experiment=ddpm_digits run_name=demo
	$(PY) experiments/sample.py ckpt_path=$(DEMO_DIR)/checkpoints/last.ckpt num_samples=64 output_dir=$(DEMO_DIR)/samples
	$(PY) experiments/evaluate.py ckpt_path=$(DEMO_DIR)/checkpoints/last.ckpt output_dir=$(DEMO_DIR)/eval

test: install
	$(PY) -m pytest -n 2 --durations=15

test-fast: install
	$(PY) -m pytest -n 2 -m "not slow"
