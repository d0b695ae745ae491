# ViLMS Edge: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
# ansible-core's ssh-agent module imports cryptography's DSA, which warns on every ansible-playbook
# start (CryptographyDeprecationWarning, a UserWarning subclass): not ours to fix, so not printed.
export PYTHONWARNINGS ?= ignore:DSA is deprecated:UserWarning
SCENARIOS ?= cpu jetson dgpu fleet
# No colour codes in logs that are not a terminal (ansible, ansible-lint, molecule, pytest).
ifneq ($(shell [ -t 2 ] && echo tty),tty)
export NO_COLOR := 1
export ANSIBLE_NOCOLOR := 1
export PY_COLORS := 0
endif
# Where `make test` leaves its records (junit xml, checks.txt) and sums them up.
# Not under build/: the gateway role removes that setuptools folder before building its wheel.
REPORTS ?= .cache/test-reports
override REPORTS := $(abspath $(REPORTS))
# Long steps run through testbed/talk (a line after 20 s of silence, no colour in logs); the
# test bed's tools through testbed/engine.sh (DOCKER_HOST and the test hosts' runtime).
TALK = $(PYTHON) testbed/talk
ENGINE = bash testbed/engine.sh exec --

.PHONY: setup demo demo-down demo-clean serve test unit integration lint testbed testbed-down molecule lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip>=25.1'

# torch first, so the embeddings extra does not pull PyPI's multi-GB CUDA build on a box without a GPU:
# testbed/torch-pip-args picks a local wheel, the CPU index, or says plainly what it downloads.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $$($(PYTHON) testbed/torch-pip-args)
	$(BIN)/pip install -q -e '.[embeddings]' --group dev
	touch $@

setup: $(VENV)/.installed

## The demo edge box (vilms-demo on 127.0.0.1:8989): a systemd + Docker host converged with site.yml.
demo: setup
	bash testbed/demo.sh up

## Stop everything `make demo` started: the box, its network, the test bed's own dockerd.
demo-down:
	bash testbed/demo.sh down

## demo-down, then remove the images, caches and Docker data root the demo made.
demo-clean:
	bash testbed/demo.sh clean

## The gateway alone, in the foreground: CONFIG=path, or the sample with stand-in engines on 8990.
serve: setup
	$(if $(CONFIG),$(BIN)/vilms-gateway serve --config $(CONFIG),$(BIN)/python testbed/serve_sample.py)

## The whole test suite: lint, unit tests, then the test-bed tests (ansible-runner, every Molecule
## scenario); ends with one line of totals over every stage.
test: setup
	@rm -rf $(REPORTS) && mkdir -p $(REPORTS)
	@start=$$SECONDS; $(MAKE) --no-print-directory lint unit integration molecule REPORTS=$(REPORTS); rc=$$?; \
		bash testbed/engine.sh release; \
		$(PYTHON) .ci/totals.py $(REPORTS) --label "make test" --seconds $$((SECONDS - start)); exit $$rc

# Each stage leaves a record in $(REPORTS): pytest's junit xml, or a line in checks.txt.
unit: setup
	@mkdir -p $(REPORTS)
	$(TALK) unit -- $(BIN)/python -m pytest -q --junitxml=$(REPORTS)/unit.xml

## site.yml through ansible-runner against a systemd + Docker test host; prints each task as it runs.
integration: setup testbed
	@mkdir -p $(REPORTS)
	VILMS_REQUIRE_TESTBED=1 $(TALK) integration -- $(ENGINE) $(BIN)/python -m pytest -q -s -m testbed \
		tests/integration --junitxml=$(REPORTS)/integration.xml

lint: setup
	@mkdir -p $(REPORTS)
	@if $(TALK) lint -- bash -c '$(BIN)/ruff check -q gateway tests testbed bench && $(BIN)/mypy && $(BIN)/ansible-lint -q'; \
		then echo "passed lint" >> $(REPORTS)/checks.txt; \
		else echo "failed lint" >> $(REPORTS)/checks.txt; exit 1; fi

testbed:
	$(TALK) setup-testbed -- bash .ci/setup-testbed.sh

## Stop the test bed's own Docker engine (or undo its runtime entry in the machine's), unless hosts still run.
testbed-down:
	bash testbed/engine.sh release

molecule: setup testbed
	@mkdir -p $(REPORTS)
	@set -e; for s in $(SCENARIOS); do echo "== molecule test -s $$s"; \
		if $(TALK) molecule-$$s -- $(ENGINE) $(BIN)/molecule test -s $$s; \
		then echo "passed molecule:$$s" >> $(REPORTS)/checks.txt; \
		else echo "failed molecule:$$s" >> $(REPORTS)/checks.txt; exit 1; fi; done

## Pin the gateway's dependencies for every box in requirements.lock (docs/ansible.md, "The lock"):
## aarch64 and x86_64, Python 3.11 and newer, the embeddings extra; torch stays each platform's own.
lock:
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --fork-strategy fewest \
		--extra embeddings --overrides <(echo "torch ; sys_platform == 'never'") --no-emit-package torch \
		--custom-compile-command "make lock" --output-file requirements.lock

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
