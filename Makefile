# zoomsr: make install | make test | make lint | make demo
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
# this checkout's src first: a worktree that shares another checkout's .venv tests its own code
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: install test test-all lint format demo ui browser clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" "setuptools>=68,<81" wheel
	# torch and torchvision pinned together (see README: they come from the local wheel cache)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]" torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --no-deps pyiqa==0.1.16
	# TOPIQ (pyiqa's topiq_arch) imports facexlib at import time; its deps are already here
	$(BIN)/pip install --quiet --no-deps facexlib==0.3.0 filterpy==2.0.0
	# gradio caps pillow<13; the pinned pillow 13 works with it (its other deps: pyproject.toml)
	$(BIN)/pip install --quiet --no-deps gradio==6.31.0
	touch $(STAMP)

install: $(STAMP) browser

# Headless Chromium for the UI's browser test: Debian's packages, installed once with apt where
# they are missing (never a downloaded browser); the test skips, saying why, where apt cannot.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      chromium chromium-driver) >/dev/null || echo "chromium: apt install failed"; \
	  else echo "chromium/chromium-driver missing and apt-get (as root) unavailable:" \
	    "the UI browser test will skip"; fi; fi

ui: $(STAMP)
	$(BIN)/zoomsr ui $(ARGS)

test: $(STAMP) browser
	$(BIN)/pytest -q -m "not slow and not gpu and not network" --durations=15

test-all: $(STAMP) browser
	$(BIN)/pytest -q -m "not gpu and not network"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

demo: $(STAMP)
	$(BIN)/python -m zoomsr.demo

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
