# modstream: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help setup demo test test-unit test-integration stack-up stack-down train train-frozen bench lint clean

help:
	@echo "make demo        set up, start a local Kafka + Redis, stream sample posts, show verdicts"
	@echo "make test        set up, start the local stack, run unit, model and integration tests"
	@echo "make test-unit   unit and model tests only (no services)"
	@echo "make stack-up    start the local stack (Kafka KRaft + Redis, no Docker); see .stack/env"
	@echo "make stack-down  stop it"
	@echo "make train       retrain the shipped model from ../shared/data (LoRA, ~1 h on 2 CPU cores)"
	@echo "make train-frozen  heads on the frozen encoder into models/frozen (minutes once cached)"
	@echo "make bench       end-to-end throughput and batching benchmarks"
	@echo "make lint        ruff and mypy"

# The virtual environment, re-made when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

setup: $(STAMP)

stack-up: $(STAMP)
	PYTHON=$(PY) bash deploy/local/stack.sh up

stack-down:
	bash deploy/local/stack.sh down

demo: $(STAMP)
	$(VENV)/bin/modstream demo

test: $(STAMP) stack-up
	source .stack/env && $(PY) -m pytest -q -ra

test-unit: $(STAMP)
	$(PY) -m pytest -q -ra -m "not integration"

test-integration: $(STAMP) stack-up
	source .stack/env && $(PY) -m pytest -q -ra -m integration

# The shipped model's recipe (about an hour on 2 CPU cores; resumable with --resume).
train: $(STAMP)
	$(VENV)/bin/modstream train --mode lora --data-dir ../shared/data --out models/default \
		--epochs 3 --batch-size 32 --patience 2 --max-train-per-task 16000 --select last \
		--checkpoint-dir $(HOME)/.cache/modstream/ckpt-lora

train-frozen: $(STAMP)
	$(VENV)/bin/modstream train --mode frozen --data-dir ../shared/data --out models/frozen

bench: $(STAMP) stack-up
	source .stack/env && $(PY) benchmarks/throughput.py

lint: $(STAMP)
	$(VENV)/bin/ruff check worker models training tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
