SHELL := /bin/bash
# One place that knows how to install and run evomerge on a fresh machine.
#
# `make install` installs the tested set: constraints/tested.txt pins every dependency (regenerate it with
# `make lock`), TORCH_CONSTRAINT pins the CPU torch wheel that lies on this machine's disk. On a CUDA machine
# run `make install TORCH_CONSTRAINT=` to keep your own torch (the lock does not pin torch).
# `make test-latest` installs today's newest releases into .venv-latest and runs the same suite there, so the
# next optuna/transformers release shows up as a red test here, not as a user's broken search.
PYTHON ?= python3
VENV ?= .venv
LATEST_VENV ?= .venv-latest
LOCK ?= constraints/tested.txt
TORCH_CONSTRAINT ?= constraints/torch-cpu.txt
# test processes (pytest-xdist): the suite is CPU-bound at ~1 core, so 2 halves its time on a 2-core machine
PYTEST_WORKERS ?= 2
BIN = $(VENV)/bin
TORCH_FLAG = $(if $(TORCH_CONSTRAINT),-c $(TORCH_CONSTRAINT),)
LOCK_FLAG = $(if $(LOCK),-c $(LOCK),)

.PHONY: install demo test test-all test-latest lint lock bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK) $(TORCH_CONSTRAINT)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(LOCK_FLAG) $(TORCH_FLAG) -e '.[dev]'
	touch $@

demo: install
	$(BIN)/evomerge demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

test-all: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m 'slow or not slow'

# The same suite against the newest releases of every dependency (torch stays the pinned CPU wheel).
# Skipped, with a line saying so, when the newest releases are exactly the locked set.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade $(TORCH_FLAG) -e '.[dev]'
	@$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^torch==' | sort > $(LATEST_VENV)/freeze.txt
	@if diff -q <(grep -v '^#' $(LOCK) | sort) $(LATEST_VENV)/freeze.txt >/dev/null; then \
	  echo "test-latest: the newest releases are the locked set ($(LOCK)); the pinned run already tested them"; \
	else \
	  echo "test-latest: newer releases than $(LOCK):"; \
	  diff <(grep -v '^#' $(LOCK) | sort) $(LATEST_VENV)/freeze.txt | grep '^>' || true; \
	  $(LATEST_VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider; \
	fi

# Regenerate the lock from a fresh resolution of today's newest releases (then run `make test`).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q $(TORCH_FLAG) -e '.[dev]'
	{ echo "# The tested set: every dependency of evomerge[dev] but torch, as resolved on $$(date -u +%F) (make lock)."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^torch==' | sort; } > $(LOCK)
	rm -rf .venv-lock

lint: install
	$(BIN)/ruff check .
