# Quick start: `make study` (quick study on the built-in synthetic data), `make test`.
PYTHON ?= python3
VENV ?= .venv
# One or more config files, separated by spaces; a path with spaces or parentheses is quoted inside the value:
# make study CONFIG="config/quick.yaml 'my configs/mine.yaml'".
CONFIG ?= config/quick.yaml
# The cores this process may run on (its CPU affinity: a cpuset, taskset), at most 8: every job is
# deterministic whatever runs beside it (the quick study's trainings take one thread each), so the results
# are the same on any count; the cost table's timing takes every core for itself (tables.smk). At most 8,
# as each job is a Python process with torch loaded (some hundred MB): a large host, or a container limited
# by CPU quota rather than by cpuset (docker --cpus, whose processes see every host core), gets no more
# jobs at once than memory holds. CORES=N sets it.
CORES ?= $(shell $(PYTHON) -c 'import os; n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(); print(max(1, min(n or 1, 8)))' 2>/dev/null || echo 2)
BIN := $(VENV)/bin
# The rules call the `sonoseg` tool: the venv's bin comes first on PATH for every recipe. PATH separates its
# folders by ':', so a checkout whose path holds one cannot be put on it (every rule would then miss sonoseg).
ifneq (,$(findstring :,$(CURDIR)))
$(error $(CURDIR): the checkout's path holds a ':', which PATH cannot hold (it separates PATH's folders): clone it under a path without one)
endif
export PATH := $(abspath $(BIN)):$(PATH)

# The study's name (its results/<study>/ folder), as Snakemake layers the files: config/config.yaml, then each
# of CONFIG in order, the last `study` winning (CONFIG="config/quick.yaml mine.yaml" is mine.yaml's study).
STUDY ?= $(shell sed -n 's/^study: *["'"'"']\{0,1\}\([A-Za-z0-9_.-]*\).*/\1/p' config/config.yaml $(CONFIG) | tail -n 1)

.PHONY: study confirm report test lint clean

# The venv, installed by uv (from PyPI: it unpacks torch's wheels in parallel, 46 s on a fresh 2-core
# machine against 116 s for pip); INSTALLER=pip installs with pip instead, which follows pip's own
# configuration (an index or a proxy set in pip.conf, which uv does not read). Compiled to bytecode at
# install, as pip does: where PYTHONDONTWRITEBYTECODE is set, every job would otherwise recompile the
# modules it imports (torch's among them: 9 s an import against 3 s).
INSTALLER ?= uv
$(BIN)/sonoseg: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test]' || \
		{ echo "uv could not install the venv (behind a pip mirror or proxy? uv ignores pip.conf): make INSTALLER=pip" >&2; exit 1; }
else
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
endif
	touch $@

# At the end, the in-domain Table 2, the generalization table (the external datasets) and Dice by
# subgroup (where the networks fail), as Markdown.
SHOWN_TABLES = table2 generalization subgroups
study: $(BIN)/sonoseg
	snakemake all --cores $(CORES) --configfile $(CONFIG)
	@for table in $(SHOWN_TABLES); do \
		if [ -f results/$(STUDY)/tables/$$table.md ]; then echo; cat results/$(STUDY)/tables/$$table.md; fi; \
	done

# The same study on a fresh phantom seed (config/confirm.yaml), once its protocol is frozen.
confirm: $(BIN)/sonoseg
	snakemake all --cores $(CORES) --configfile $(CONFIG) config/confirm.yaml --config study=$(STUDY)_confirm

# The study's HTML report. It is made from the study's finished outputs: run `make study` first
# (snakemake --report stops at the first figure or table missing, naming it).
report: $(BIN)/sonoseg
	snakemake --report results/$(STUDY)/report.html --cores $(CORES) --configfile $(CONFIG)

# The whole suite (docs/testing.md) on one pytest-xdist worker per core (TEST_WORKERS=0: in this
# process); tests that share a costly fixture stay on one worker (tests/conftest.py). The 15 slowest
# steps are listed at the end, so a test that grows slow shows up in every run.
# `make test PYTEST_ARGS='-m "not slow"'` skips the real-workflow runs.
TEST_WORKERS ?= auto
PYTEST_ARGS ?=
test: $(BIN)/sonoseg
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Static checks (CI runs them before the tests): ruff lint and format, snakefmt, Snakemake's linter.
lint: $(BIN)/sonoseg
	$(BIN)/ruff check setup.py src tests bench
	$(BIN)/ruff format --check setup.py src tests bench
	$(BIN)/snakefmt --check Snakefile workflow/rules
	snakemake --lint --configfile $(CONFIG)

clean:
	rm -rf results .snakemake
