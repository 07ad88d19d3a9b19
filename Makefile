# fer-mtl: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements.lock -e '.[test]'
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

.PHONY: lock
lock: ## Refresh requirements.lock from the current .venv
	$(PIP) freeze --exclude-editable | grep -v '^-e ' > requirements.lock
