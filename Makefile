# The study's two commands (README): `make study` runs everything, `make test` passes the tests.
# Both create the virtual environment .venv on first use (Python 3.11, ~6 GB with CUDA torch).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: study test env lint bench plots readme benchmark clean-results

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	$(BIN)/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

env: $(BIN)/.installed

## main job: build the default data and run every notebook with the params.yaml profile (cpu)
study: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

## unit tests + every notebook under nbval with the smoke profile
test: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

## the plots of dvc.yaml for reading offline: results/plots/index.html (vega inlined) + one SVG/PNG per plot
plots: env
	$(BIN)/histolib plots

## README's results section (the scorecard) from the claims in results/*/metrics.json
readme: env
	$(BIN)/histolib readme-results

## notebook 06 alone (benchmark + scorecard) with the stages it depends on
benchmark: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro nb06_benchmark

lint: env
	$(BIN)/ruff check .

## speed/memory benchmarks (records JSON under benchmarks/results/)
bench: env
	$(BIN)/python -m pip install --quiet --no-binary elasticdeform "elasticdeform==0.5.1"
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done
