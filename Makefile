# Two commands for a fresh machine (Python 3.11, package registries only):
#   make run    set up .venv and run the default pipeline (config/config.yaml, profiles/local)
#   make test   set up .venv and run every test (unit, slow, workflow, local SLURM)
# Both are idempotent: the environment is rebuilt only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast dry-run clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local

dry-run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local -n

test: $(STAMP)
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-results:
	rm -rf results logs
