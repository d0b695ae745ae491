# ViLMS Edge: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
SCENARIOS ?= cpu jetson dgpu

.PHONY: setup demo demo-down serve test unit integration lint testbed molecule clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade 'pip>=25.1'

# torch is pinned first so the embeddings extra takes the CPU build instead of a multi-GB CUDA one.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install 'torch==2.13.0'
	$(BIN)/pip install -e '.[embeddings]' --group dev
	touch $@

setup: $(VENV)/.installed

## The demo edge box: a systemd + Docker test host converged with site.yml (cpu profile).
demo: setup
	bash testbed/demo.sh up

demo-down:
	bash testbed/demo.sh down

## The gateway alone, in the foreground, on a config you point at (CONFIG=path).
serve: setup
	$(BIN)/vilms-gateway serve --config $(CONFIG)

## The whole test suite: lint, unit tests, then the test-bed tests (ansible-runner, every Molecule scenario).
test: setup lint unit integration molecule

# REPORTS=dir makes pytest and Molecule leave a record there (CI sums them up).
unit: setup
	$(BIN)/python -m pytest -q $(if $(REPORTS),--junitxml=$(REPORTS)/unit.xml)

## site.yml through ansible-runner against a systemd + Docker test host.
integration: setup testbed
	VILMS_REQUIRE_TESTBED=1 $(BIN)/python -m pytest -q -m testbed tests/integration \
		$(if $(REPORTS),--junitxml=$(REPORTS)/integration.xml)

lint: setup
	$(BIN)/ruff check gateway tests testbed bench
	$(BIN)/mypy
	$(BIN)/ansible-lint -q

testbed:
	bash .ci/setup-testbed.sh

molecule: setup testbed
	set -e; for s in $(SCENARIOS); do echo "== molecule test -s $$s"; $(BIN)/molecule test -s $$s; \
		$(if $(REPORTS),echo $$s >> $(REPORTS)/molecule-passed.txt;) done

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
