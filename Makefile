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

# train DDPM on the bundled digits, draw 64 samples (1000 ancestral steps), evaluate (bits/dim on a test batch,
# sample metrics on 500 DDIM-100 samples against the digits classifier)
demo: install
	$(PY) experiments/train.py experiment=ddpm_digits run_name=demo
	$(PY) experiments/sample.py ckpt_path=$(DEMO_DIR)/checkpoints/last.ckpt num_samples=64 output_dir=$(DEMO_DIR)/samples
	$(PY) experiments/evaluate.py ckpt_path=$(DEMO_DIR)/checkpoints/last.ckpt output_dir=$(DEMO_DIR)/eval \
		num_samples=500 sampler.name=ddim sampler.steps=100 bpd_batches=1 progress=false
	@echo "samples: $(DEMO_DIR)/samples/samples.png  metrics: $(DEMO_DIR)/eval/metrics.md"

# one torch thread per xdist worker: two workers share the 2 cores
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --durations=15

test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -m "not slow"
