# edgeguard: `make demo` and `make test` are the two commands a newcomer needs; `make help` lists the rest.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# The real OpenFaaS runtime (optional; see local/components.py). Functions run under of-watchdog
# when it, faas-cli and the python3-http template are found: by default in ../shared/tools next to
# the repository, or ./template/python3-http for the template. Otherwise local/runtime.py stands in.
#   make up TOOLS=/path/to/tools            make test WATCHDOG=... TEMPLATE=... FAAS_CLI=...
#   make demo RUNTIME=local                 (auto | watchdog | local)
ifneq ($(TOOLS),)
export EDGEGUARD_TOOLS := $(TOOLS)
endif
ifneq ($(WATCHDOG),)
export EDGEGUARD_WATCHDOG := $(WATCHDOG)
endif
ifneq ($(TEMPLATE),)
export EDGEGUARD_TEMPLATE := $(TEMPLATE)
endif
ifneq ($(FAAS_CLI),)
export EDGEGUARD_FAAS_CLI := $(FAAS_CLI)
endif
ifneq ($(RUNTIME),)
export EDGEGUARD_RUNTIME := $(RUNTIME)
endif

# make up / make demo: PORT (default 8080; the demo takes a free one when 8080 is busy and PORT is unset),
# STATE_DIR (default .local-state/<port>), KUBE (auto | emulator | real | none), SCRUBBER_MODE (make up).
RUN_ARGS := $(if $(PORT),--port $(PORT)) $(if $(STATE_DIR),--state-dir $(STATE_DIR)) $(if $(KUBE),--kube $(KUBE))

# make test runs in two pytest-xdist workers: most tests wait on real processes (of-watchdog, kube-apiserver),
# so two workers halve the wall time on 2 cores (measured: 11 min 29 s serial, 6 min 54 s with -n 2 on the same
# loaded machine). TEST_JOBS=0 runs in one process.
TEST_JOBS ?= 2

.PHONY: help venv test lint demo up bench clean

help:
	@echo "edgeguard make targets:"
	@echo "  make demo     start the bundle locally, play the seed scenarios, stop everything (about 15 s once .venv exists)"
	@echo "  make test     the whole test suite (about 7 min on 2 cores; PYTEST_ARGS='-k words' for a subset, TEST_JOBS=0 in one process)"
	@echo "  make up       the local stack in the foreground, to curl and kubectl (Ctrl-C stops it)"
	@echo "  make bench    speed, memory and fuzz figures (BENCH=memory runs one)"
	@echo "  make lint     ruff (lint and format check) and mypy, findings per owner (make test runs it first)"
	@echo "  make venv     create or update .venv (about a minute the first time)"
	@echo "  make clean    remove .venv and build leftovers"
	@echo "  make help     this list"
	@echo "variables: PORT=8080 STATE_DIR=.local-state/<port> KUBE=auto|emulator|real|none SCRUBBER_MODE=report|move"
	@echo "           TOOLS=../shared/tools (the real OpenFaaS parts) RUNTIME=auto|watchdog|local"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "edgeguard needs Python 3.11+"'
	@echo "Creating $(VENV) (about a minute the first time; pip is quiet meanwhile)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
	@touch $@

test: venv
	$(BIN)/python -m local.lint
	$(BIN)/python -m pytest -n $(TEST_JOBS) $(PYTEST_ARGS)

lint: venv
	$(BIN)/python -m local.lint $(LINT_ARGS)

demo: venv
	EDGEGUARD_RUN_KIND='make demo' $(BIN)/python -m local.demo $(RUN_ARGS)

up: venv
	EDGEGUARD_RUN_KIND='make up' $(BIN)/python -m local.gateway $(RUN_ARGS) $(if $(SCRUBBER_MODE),--scrubber-mode $(SCRUBBER_MODE))

bench: venv
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) build .pytest_cache
