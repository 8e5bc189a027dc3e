# Touchstream — the newcomer's two commands are `make demo` and `make test`.
#
#   make venv    .venv with the project and its test dependencies (no-op when up to date)
#   make stack   the local Kafka broker + PostgreSQL (`touchstream stack up`; reuses what runs)
#   make test    venv + stack + headless Chromium (installed with apt when missing) + the whole test suite
#   make demo    venv + stack + the pipeline with synthetic traffic
#   make down    stop the local stack (`make wipe` also deletes its data)
#
# Variables: PYTHON (interpreter for the venv, default python3.11), TESTS (default tests/),
# PYTEST_ARGS (extra pytest arguments), e.g. `make test TESTS=tests/unit PYTEST_ARGS=-x`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.touchstream-installed
TESTS ?= tests/
PYTEST_ARGS ?=

.PHONY: help venv stack browser test demo down wipe

help:
	@sed -n '1,/^$$/p' Makefile | sed 's/^# \{0,1\}//'

venv: $(STAMP)

# Re-installs when pyproject.toml or setup.py changed, or a source of the compiled session core
# (setup.py COMPILED: mypyc builds them next to the sources; other code changes need nothing).
CORE := $(shell sed -n 's/^    "\(sessionizer\/[a-z_]*\.py\)",$$/\1/p' setup.py)
$(STAMP): pyproject.toml setup.py $(CORE)
	@if [ ! -x $(BIN)/pip ]; then \
	  [ -n "$(PYTHON)" ] || { echo "make venv: python3.11 not found (set PYTHON=...)" >&2; exit 1; }; \
	  "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	    || { echo "make venv: $(PYTHON) is older than Python 3.11" >&2; exit 1; }; \
	  echo "creating $(VENV) with $(PYTHON)"; \
	  "$(PYTHON)" -m venv --clear $(VENV); \
	fi
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

stack: venv
	$(BIN)/touchstream stack up

# The browser tests drive Debian's chromium + chromium-driver: installed here as root or through
# password-less sudo; otherwise this stops at once with the exact command to run.
browser: venv
	$(BIN)/touchstream stack browser

test: venv stack browser
	@rc=0; $(BIN)/pytest -q $(TESTS) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5) — that is a failure" >&2; fi; \
	exit $$rc

demo: venv stack
	$(BIN)/touchstream demo

down:
	@if [ -x $(BIN)/touchstream ]; then $(BIN)/touchstream stack down; \
	else echo "no $(BIN)/touchstream: nothing to stop"; fi

wipe:
	@if [ -x $(BIN)/touchstream ]; then $(BIN)/touchstream stack down --wipe; \
	else rm -rf .stack; fi
