# The README's two commands: `make serve` (the service on its embedded default) and `make test`.
# Both create or reuse .venv and install torch==2.13.0 *first*, so that pip never pulls a
# multi-GB CUDA build on a CPU machine, then the project with its dev extras.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hinn-installed

.PHONY: install serve test lint bench-perf bench-science clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m hinn_core.fastpath
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/hinn serve

test: install
	VENV=$(VENV) scripts/test.sh

lint: install
	$(BIN)/ruff check hinn_core hinn_client app tests bench

bench-perf: install
	$(BIN)/python -m bench.perf.run

bench-science: install
	$(BIN)/python -m bench.science.run --seeds 0 1 2 --extra-seeds 0 --jobs 2 --json docs/benchmarks.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
