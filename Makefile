# One place that knows how to install and run evomerge on a fresh machine.
# TORCH_CONSTRAINT pins the CPU torch wheel that lies on this machine's disk;
# on a CUDA machine run `make install TORCH_CONSTRAINT=` to keep your own torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_CONSTRAINT ?= constraints/torch-cpu.txt
BIN = $(VENV)/bin
CONSTRAINT_FLAG = $(if $(TORCH_CONSTRAINT),-c $(TORCH_CONSTRAINT),)

.PHONY: install demo test test-all lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(TORCH_CONSTRAINT)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(CONSTRAINT_FLAG) -e '.[dev]'
	touch $@

demo: install
	$(BIN)/evomerge demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m 'slow or not slow'

lint: install
	$(BIN)/ruff check .
