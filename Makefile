# Bulwark: `make demo` runs the platform on one machine, `make test` runs the tests.
# Each target installs what it needs first (a virtual environment from requirements.lock).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
export BULWARK_HOME ?= $(CURDIR)/var

.PHONY: help venv system-deps browser-deps proto test test-slow test-all bench demo down status clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv: $(STAMP)  ## Create .venv and install the pinned dependencies (CPU torch).

$(STAMP): requirements.lock pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	@# torch first, and exactly the CPU build: a dependency asking for plain `torch` would pull CUDA.
	$(BIN)/python -m pip install -q "$$(grep -E '^torch==' requirements.lock)" || { \
	  echo "error: could not install the CPU build of torch 2.13.0; put its wheel on a --find-links path or set" \
	       "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"; exit 1; }
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -c "from bulwark.stack.parts import ensure_triton_python_stub as s; s()"
	$(BIN)/python -m bulwark.kernels build
	@touch $@

system-deps:  ## Debian packages the local parts need (redis-server, libpython3.11, g++ for the int8 kernel).
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	ldconfig -p | grep -q 'libpython3.11.so.1.0' || missing="$$missing libpython3.11"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "error: install these Debian packages first:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi

browser-deps:  ## Debian's Chromium, for the console's browser tests (slow suite); Playwright never downloads one.
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing: chromium"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "error: install Debian's chromium first (sudo apt-get install chromium)"; exit 1; fi; \
	fi

proto: $(STAMP)  ## Regenerate the gRPC code in libs/bulwark/api from proto/.
	$(BIN)/python proto/generate.py

test: $(STAMP)  ## The test suite (real broker, Redis, Triton started by fixtures); slow suites excluded.
	$(PYTEST) -m "not slow" -p no:cacheprovider

test-slow: $(STAMP) browser-deps  ## The slow suites (fault injection, end to end, distributed); CI runs them too.
	$(PYTEST) -m slow -p no:cacheprovider

test-all: $(STAMP) browser-deps  ## Everything.
	$(PYTEST) -p no:cacheprovider

bench: $(STAMP)  ## Every benchmark in bench/, printed as one table (ratios against in-run baselines).
	cd bench && ../$(BIN)/python run_all.py

demo: $(STAMP)  ## Run the whole platform locally and walk through the story.
	$(BIN)/bulwark stack up
	$(BIN)/bulwark demo

down:  ## Stop everything `make demo` started, and nothing else.
	@test -x $(BIN)/bulwark && $(BIN)/bulwark stack down || echo "nothing to stop"

status: $(STAMP)  ## Each part up, degraded or down.
	$(BIN)/bulwark status

clean: down  ## Remove the local stack's state (var/ and its keys in Redis) and caches; keeps .venv.
	@if test -x $(BIN)/bulwark; then $(BIN)/bulwark stack clean; else rm -rf var; fi
	rm -rf bench/results .pytest_cache
