# make run   - create .venv, install, serve on 127.0.0.1:8000 (CLUSTERBENCH_* settings apply)
# make test  - the same set-up, then lint and every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint format openapi bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m service

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy service

format: install
	$(BIN)/ruff check --fix service tests bench
	$(BIN)/ruff format service tests bench

openapi: install
	$(BIN)/python -m service.openapi

# The throughput case drives the server with wrk (Debian's package), installed if missing.
bench: install
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .clusterbench .pytest_cache .mypy_cache .ruff_cache
