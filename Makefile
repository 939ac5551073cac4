# The README's two commands: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and exactly pinned: it takes the local CPU build instead of pulling CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python recipes/demo.py

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check tdmt recipes tests benchmarks slurm

bench: $(STAMP)
	$(BIN)/python benchmarks/env_throughput.py

# On a machine with one CUDA GPU, under 8 minutes: writes gpu-report.md (docs/gpu.md). Without CUDA it exits 2;
# `$(BIN)/python benchmarks/gpu_check.py --dry-run` rehearses every step on the CPU.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV)
