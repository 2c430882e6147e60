# Quick start: `make study` (quick study on the built-in synthetic data), `make test`.
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= config/quick.yaml
CORES ?= 2
BIN := $(VENV)/bin
# The rules call the `sonoseg` tool: the venv's bin comes first on PATH for every recipe.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: study test lint clean

$(BIN)/sonoseg: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

study: $(BIN)/sonoseg
	snakemake all --cores $(CORES) --configfile $(CONFIG)

test: $(BIN)/sonoseg
	$(BIN)/python -m pytest -q

lint: $(BIN)/sonoseg
	snakemake --lint --configfile $(CONFIG)

clean:
	rm -rf results .snakemake
