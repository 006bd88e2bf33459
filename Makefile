# callrouter: every developer and CI task. `make test` does all set-up on a
# fresh machine (virtualenv, install, Asterisk sandbox) and then runs ruff,
# mypy --strict and pytest. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.callrouter-installed

# The 1C plugin is its own package; everything about it is optional until it exists.
ONEC_PYPROJECT := $(wildcard plugins/onec/pyproject.toml)
ONEC_SRC       := $(wildcard plugins/onec/callrouter_onec)
ONEC_TESTS     := $(wildcard plugins/onec/tests)

# The example plugin is what plugin authors copy: it type-checks against the contract.
VIP_SRC        := $(wildcard examples/plugin-vip-greeting/callrouter_vip)

MYPY_PATHS := router $(ONEC_SRC) $(VIP_SRC)
PYTEST_ARGS ?=
# pytest-xdist workers for tests/ (0: one process). Most of the integration time is
# waiting on Asterisk, phones and timers, so three workers keep the suite in its
# budget even on two cores; a file stays on one worker (its module fixtures are
# shared by its tests) and each worker has its own session sandbox.
PYTEST_WORKERS ?= 3

export PIP_DISABLE_PIP_VERSION_CHECK := 1

# pytest exits 5 when it collected no test: that is not a failure here.
# $(1): all, unit (not integration) or integration. The 1C plugin is its own
# package with its own pytest configuration, so its tests run in a second pytest
# from plugins/onec (its test files may share basenames with ours); both always
# run, and either failing fails (the plugin's on the same workers: 87 s in one
# process, 43 s in two). It declares the main suite's markers, so the same -m
# works there. Whether it has integration tests at all is asked of pytest
# (--collect-only, one process, 5 s; exit 5: none), not of the source text, which
# a comment naming the marker fooled: `make integration` then skips it rather
# than start workers that find nothing (22 s).
define pytest
	@run() { rc=0; "$$@" || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected (exit 5), treated as success"; rc=0; fi; \
	  return $$rc; }; \
	case "$(1)" in unit) m="not integration";; integration) m="integration";; *) m="";; esac; \
	status=0; \
	run $(PY) -m pytest $${m:+-m "$$m"} -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests || status=1; \
	if [ -n "$(ONEC_TESTS)" ]; then \
	  if [ "$(1)" = integration ]; then \
	    marked=$$(cd plugins/onec && $(abspath $(PY)) -m pytest -q -p no:cacheprovider --collect-only -m integration tests 2>&1); \
	    case $$? in 0) ;; 5) m=skip;; *) echo "$$marked"; echo "== plugins/onec: collecting its tests failed"; m=failed; status=1;; esac; \
	  fi; \
	  if [ "$$m" = skip ]; then echo "== plugins/onec: no integration tests"; \
	  elif [ "$$m" != failed ]; then \
	    echo "== plugins/onec"; \
	    (cd plugins/onec && run $(abspath $(PY)) -m pytest $${m:+-m "$$m"} -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests) || status=1; \
	  fi; \
	fi; \
	exit $$status
endef

.PHONY: run-lint run-typecheck run-pytest run-unit run-integration
.PHONY: help test pytest setup venv install provision browser lint typecheck unit integration \
        sandbox sandbox-stop demo bench soak clean distclean

help:
	@echo "make test         set everything up, then ruff, mypy --strict and all tests"
	@echo "make demo         set everything up and run the demo (DEMO_TRANSPORT=tcp: over native TCP AMI)"
	@echo "make pytest       all tests (unit and integration), no lint"
	@echo "make unit         unit tests only (no Asterisk)"
	@echo "make integration  integration tests against the Asterisk sandbox"
	@echo "make lint         ruff check and the architecture rules (lint-imports)"
	@echo "make typecheck    mypy --strict"
	@echo "make sandbox      start a detached sandbox Asterisk named 'dev' with the shipped dialplan and print its URL"
	@echo "make sandbox-stop stop it"
	@echo "make bench        run the benchmarks in bench/"
	@echo "make soak         half an hour of office traffic through callrouter run, measured (SOAK_MINUTES=30)"
	@echo "make clean        remove caches and build output (distclean: also .venv)"

# Runs all three checks even when one fails, so one run shows every problem.
test: setup
	@failed=""; \
	$(MAKE) --no-print-directory run-lint || failed="$$failed lint"; \
	$(MAKE) --no-print-directory run-typecheck || failed="$$failed typecheck"; \
	$(MAKE) --no-print-directory run-pytest || failed="$$failed pytest"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: lint, typecheck and pytest passed"

pytest: setup run-pytest

run-pytest:
	$(call pytest,all)

setup: install provision encoders browser postgres

# A virtualenv made with the system Python; on Debian, python3-venv is installed
# when the venv module (or its ensurepip) is missing. A broken .venv is remade.
venv:
	@if [ -x $(PY) ] && $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	  exit 0; \
	fi; \
	if ! command -v $(PYTHON) >/dev/null 2>&1; then \
	  echo "make: $(PYTHON) not found; install Python >= 3.11 or run make PYTHON=/path/to/python3" >&2; \
	  exit 1; \
	fi; \
	if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "make: callrouter needs Python >= 3.11, $(PYTHON) is $$($(PYTHON) -V 2>&1);" \
	       "run make PYTHON=python3.11 (or newer)" >&2; \
	  exit 1; \
	fi; \
	if ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing python3-venv with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else \
	    echo "make: $(PYTHON) has no working venv module: install python3-venv" \
	         "(sudo apt-get install python3-venv)" >&2; \
	    exit 1; \
	  fi; \
	fi; \
	rm -rf $(VENV); \
	echo "creating $(VENV) with $$($(PYTHON) -V 2>&1)"; \
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when a pyproject changes (or the venv was remade).
$(STAMP): pyproject.toml $(ONEC_PYPROJECT) | venv
	$(PY) -m pip install -q -e '.[dev]' $(if $(ONEC_PYPROJECT),-e plugins/onec)
	@touch $@

install: $(STAMP)

# The cached Debian root with Asterisk (about a minute the first time, as root);
# fails with the exact reason when it cannot be made.
provision: install
	$(PY) -m router.sandbox provision

# lame and opusenc: the encoders of [recordings] transcode (tests/unit/recordings); the
# service needs the one it is configured for on the host it runs on.
.PHONY: encoders
encoders:
	@if ! command -v lame >/dev/null 2>&1 || ! command -v opusenc >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing lame and opus-tools with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lame opus-tools; \
	  else \
	    echo "make: lame or opusenc is missing: recordings' transcoding tests need them" \
	         "(sudo apt-get install lame opus-tools)" >&2; \
	  fi; \
	fi

# Debian's PostgreSQL: the sandbox's cel_pgsql writes CEL into a private cluster on
# loopback (router/sandbox/postgres.py, tests/integration/test_call_life.py).
.PHONY: postgres
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing postgresql with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else \
	    echo "make: PostgreSQL is missing: the cel_pgsql test needs it" \
	         "(sudo apt-get install postgresql)" >&2; \
	  fi; \
	fi

# Debian's chromium for the live page's browser test (tests/integration/test_ui_live.py):
# Playwright's client drives it; no browser is ever downloaded (no `playwright install`).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "make: /usr/bin/chromium is missing: the live page's browser test needs it" \
	         "(sudo apt-get install chromium)" >&2; \
	  fi; \
	fi

lint: install run-lint

# ruff check, ruff format --check, then the architecture rules
# ([tool.importlinter] in pyproject.toml); all run even when one fails. The
# example plugin is not installed, so its folder goes on the path for lint-imports.
# `ruff format .` fixes what the format check reports.
run-lint:
	@status=0; \
	echo "$(PY) -m ruff check ."; $(PY) -m ruff check . || status=1; \
	echo "$(PY) -m ruff format --check ."; $(PY) -m ruff format --check . || status=1; \
	echo "lint-imports"; \
	PYTHONPATH=examples/plugin-vip-greeting $(VENV)/bin/lint-imports --no-cache --no-logo || status=1; \
	exit $$status

typecheck: install run-typecheck

run-typecheck:
	$(PY) -m mypy --strict $(MYPY_PATHS)

unit: install run-unit

run-unit:
	$(call pytest,unit)

integration: setup run-integration

run-integration:
	$(call pytest,integration)

# With the shipped dialplan: the PSTN phone's calls enter its callrouter-inbound.
sandbox: setup
	$(PY) -m router.sandbox start dev --dialplan examples/asterisk/extensions.conf

sandbox-stop: install
	$(PY) -m router.sandbox stop dev

demo: setup
	$(PY) examples/demo.py

# All benchmarks in one run (under 10 minutes): bench/results/latest.md and
# docs/performance.md. panoramisk is the TCP reference and py-spy profiles.
bench: setup
	@$(PY) -c 'import panoramisk' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run_all.py

# The office soak (not in `make bench`, not a test): callrouter run with real
# phones, the 1C double and the API for SOAK_MINUTES, measured each minute.
SOAK_MINUTES ?= 30
soak: setup
	$(PY) bench/soak_office.py --minutes $(SOAK_MINUTES)

clean:
	-@[ -x $(PY) ] && $(PY) -m router.sandbox stop --all >/dev/null 2>&1 || true
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis bench/results
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) \
	  -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
