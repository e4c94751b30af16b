# Set-up and everyday commands. Every target that runs code creates .venv first if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline/CI data: ../shared/data when it exists (read-only is fine), unless already set.
SHARED_DATA := $(abspath ../shared/data)
export DIFFORMER_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),data)

TABLE ?= 1
JOBS  ?= 1
DATASET ?= cora

.PHONY: help install lint run test test-slow test-cluster cluster-services docs docs-serve reproduce reproduce-cora search-baselines bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

install: $(STAMP)  ## create .venv with the package, its extras and the dev tools

# torch is installed first and alone, pinned to this CI machine's local CPU build (TORCH=... to
# change it; TORCH= keeps whatever torch is there); the package only asks for a range, so pip keeps
# that build. scripts/check_env.py reports what was installed. The editable install uses compat
# mode (src/ on sys.path) so that Hydra finds our plugin in the hydra_plugins namespace.
TORCH ?= torch==2.13.0
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH),$(BIN)/python -m pip install '$(TORCH)')
	$(BIN)/python -m pip install -e '.[dev]' --config-settings editable_mode=compat
	DIFFORMER_EXPECT_TORCH=$(patsubst torch==%,%,$(TORCH)) $(BIN)/python scripts/check_env.py
	touch $(STAMP)

run: $(STAMP)  ## the first run: DIFFormer-s on scikit-learn digits, offline
	$(BIN)/python train.py

# The checks CI runs before the tests: lint and import order (ruff), format (ruff format --check;
# `ruff format src` applies it), types (mypy), over src/.
lint: $(STAMP)  ## ruff (lint, format) and mypy, as CI runs them
	$(BIN)/ruff check src
	$(BIN)/ruff format --check src
	$(BIN)/mypy

test: $(STAMP)  ## the default test tier (under 10 minutes on 2 cores)
	$(BIN)/python -m pytest

test-slow: $(STAMP)  ## real-data training and long kill-and-resume cases
	$(BIN)/python -m pytest -m slow -n 2

# Real engines (tests/test_cluster.py): a PostgreSQL study fed by two sweeps, a SLURM job requeued
# at its time limit, torchrun over two nodes. Each test starts its service on localhost and skips
# with one line where it cannot; `make cluster-services` installs them from Debian (as root).
test-cluster: $(STAMP)  ## PostgreSQL, SLURM and two-node torchrun tests (make cluster-services first)
	$(BIN)/python -m pytest -m cluster -n 0

cluster-services:  ## install PostgreSQL, SLURM (slurm-wlm) and munge from Debian (root)
	@if ! command -v apt-get >/dev/null; then echo "no apt-get: install postgresql, slurm-wlm and munge yourself"; \
	elif [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "cluster services already installed"; \
	else DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql slurm-wlm munge \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql slurm-wlm munge; }; fi

# The documentation site from docs/ (mkdocs.yml); strict: a broken link or an unlisted page fails.
docs: $(STAMP)  ## the documentation site into site/ (strict, as CI builds it)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)  ## preview the documentation site at http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# A paper table: runs the missing cells (resumable), writes reproduction/table$(TABLE).md/.csv/.png
reproduce: $(STAMP)  ## a paper table: make reproduce TABLE=1 [JOBS=2]
	$(BIN)/python scripts/reproduce.py --table $(TABLE) --jobs $(JOBS)

# The paper's Cora cells (DIFFormer-s and -a, 5 runs x 500 epochs each).
reproduce-cora: $(STAMP)  ## the paper's two Cora cells
	$(BIN)/python train.py dataset=cora model=difformer_s hydra.run.dir=outputs/reproduce-cora/difformer_s
	$(BIN)/python train.py dataset=cora model=difformer_a hydra.run.dir=outputs/reproduce-cora/difformer_a

# The baseline search (the same 8-point budget for every baseline, chosen on valid; resumable):
# writes reproduction/search/$(DATASET)/<model>.json and configs/recipe/$(DATASET)_<model>.yaml
search-baselines: $(STAMP)  ## the baseline search: make search-baselines DATASET=cora
	$(BIN)/python scripts/search_baselines.py --dataset $(DATASET)

clean:  ## remove outputs/, the data cache and pytest's cache
	rm -rf outputs data/cache .pytest_cache

# Benchmarks: side-by-side ratios printed and written to bench/*results.json (not part of CI).
bench: $(STAMP)  ## the benchmarks (bench/*results.json)
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_graph.py
	$(BIN)/python scripts/bench_speed.py
	$(BIN)/python scripts/bench_stacked.py
	$(BIN)/python scripts/bench_startup.py
	$(BIN)/python scripts/bench_tu_epoch.py
