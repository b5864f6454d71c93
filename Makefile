# make run   - create .venv, install the runtime dependencies, serve on 127.0.0.1:8000
#              (CLUSTERBENCH_* settings apply: CLUSTERBENCH_PORT=9000 make run)
# make test  - the same set-up (dev extras, chromium), then lint and every test
# make lock  - re-pin requirements.lock (what the Docker image installs) from pyproject.toml
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

RUN_STAMP := $(VENV)/.runtime-stamp

.PHONY: install run test test-fast lint format openapi bench bench-record browser redis lock clean

# `make run` needs only the runtime dependencies; everything else needs the dev extras too.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m service

# The browser tests drive Debian's chromium; installed here when missing (as root).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The scale-out tests and the Redis bench case start Debian's redis-server; installed here
# when missing (as root).
redis:
	command -v redis-server >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

test: install lint browser redis
	$(BIN)/python -m pytest

# The in-process tier alone: no uvicorn, redis-server, Dask, chromium or docker (a test that
# starts one without the `server` mark fails here, naming it).
test-fast: install
	CLUSTERBENCH_TEST_TIER=fast $(BIN)/python -m pytest -m "not server" -p no:cacheprovider

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
bench: install redis
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m bench

# The same, recording the results in bench/results.md and bench/results.json (tracked).
bench-record: install redis
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m bench --record

# The image's dependencies and build backend, pinned with hashes for Python 3.11 on Linux;
# uv (from PyPI) is installed into .venv if missing.
lock: install
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.5,<1'
	$(BIN)/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" \
	| $(BIN)/uv pip compile pyproject.toml - --extra onedal --quiet --generate-hashes --python-version 3.11 \
	    --python-platform linux --custom-compile-command 'make lock' --output-file requirements.lock

clean:
	rm -rf $(VENV) .clusterbench .pytest_cache .mypy_cache .ruff_cache
