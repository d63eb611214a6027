# noisytail: `make demo` trains the demo and prints where its report is; `make test` runs the tests.
# Both set everything up on a fresh machine (a virtual environment in .venv, Fashion-MNIST).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup data demo test lint format bench-throughput bench-speed bench-losses bench-detection bench-ssl gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test,onnx]"
	rm -f $(VENV)/.installed-*; touch $@

data:
	bash scripts/get-fashion-mnist.sh

demo: setup data
	$(VENV)/bin/noisytail train configs/demo.yaml --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: setup data
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: setup
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

bench-throughput: setup data
	$(PY) scripts/bench_throughput.py

# Images/s of every method in fp32 and bf16, NCHW and channels-last (issue 15): 6 minutes, quiet.
bench-speed: setup data
	$(PY) scripts/bench_speed.py --layouts contiguous channels_last

# On a machine with a GPU: the CUDA tests and images/s of ERM, L2B and MOIT (under 10 minutes).
gpu-check:  # no setup: a GPU machine brings its own torch (scripts/gpu_check.sh)
	bash scripts/gpu_check.sh

bench-losses: setup data
	$(VENV)/bin/noisytail bench configs/bench/losses_fmnist.yaml --out runs/bench-losses

# Detection quality against cleanlab (issue 4); cleanlab (and faiss-cpu) come from the bench extra.
bench-detection: setup data
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) scripts/bench_detection.py --out runs/bench-detection

# Self-supervised pre-training and the two-stage recipe (issue 5): about an hour on 2 CPU cores.
bench-ssl: setup data
	$(PY) scripts/bench_ssl.py --part all --jobs 2 --threads 1 --out runs/bench-ssl

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
