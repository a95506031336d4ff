# Thin entry points. Every target sets up the venv first (idempotent, seconds when done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test test-fast test-slow lint bundle bench clean help

help:
	@echo "make demo   - set up, build the default bundle, run the 5-robot fleet demo (TASK=\"...\": your operator task)"
	@echo "make test   - set up and run the test suite (what CI runs)"
	@echo "make bundle - build the robots' default INT8 bundle into build/bundle (cached)"
	@echo "make bench  - run the benchmarks under bench/"
	@echo "make lint   - ruff"

setup:
	@bash scripts/setup.sh

demo: setup bundle
	@ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-42} $(PY) -m ember.demo --config config/fleet.yaml --bundle build/bundle $(if $(TASK),--task "$(TASK)")

bundle: setup
	@$(PY) -m ember_training.bundle_build --output build/bundle

test: setup lint
	@bash scripts/run_tests.sh

test-slow: setup
	@EMBER_TEST_MARKERS=slow bash scripts/run_tests.sh -q

lint: setup
	@$(VENV)/bin/ruff check .

bench: setup bundle
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build
