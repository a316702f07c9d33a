# selfref_ghn: `make run` evolves SR-GHNs on CartPole-Switch; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRESET ?= quick
ARGS ?=

.PHONY: install lock run test test-all lint typecheck format bench docs clean

install: $(STAMP)

# the exact versions the tests pass with (requirements.lock), then the package itself
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# requirements.lock from pyproject.toml's ranges (with the dev extra), for Linux x86-64 and
# CPython 3.11.5 or newer. uv keeps the versions already in the lock unless asked:
# make lock LOCK_ARGS=--upgrade (everything) or LOCK_ARGS="--upgrade-package jax".
# A package index other than the default comes from the environment (UV_DEFAULT_INDEX).
LOCK_ARGS ?=
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11.5 \
		--python-platform x86_64-manylinux_2_28 --no-emit-index-url --no-emit-find-links \
		--custom-compile-command "make lock" --quiet -o requirements.lock $(LOCK_ARGS)

run: install
	$(BIN)/selfref-ghn run $(PRESET) $(ARGS)

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

lint: install typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package as it installs: selfref_ghn/ with envs/ as selfref_ghn/envs (links
# under build/typecheck; settings in pyproject.toml's [tool.mypy])
TYPECHECK := build/typecheck
typecheck: install
	rm -rf $(TYPECHECK)/selfref_ghn && mkdir -p $(TYPECHECK)/selfref_ghn
	ln -s $(CURDIR)/selfref_ghn/* $(TYPECHECK)/selfref_ghn/
	ln -s $(CURDIR)/envs $(TYPECHECK)/selfref_ghn/envs
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m selfref_ghn.tools.bench --out bench_results

docs: install
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
